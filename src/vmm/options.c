#include "vmm/options.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define VMM_MAX_MEMORY_MIB (1024ULL * 1024) /* 1 TiB */

void vmm_options_usage(FILE *out)
{
    fprintf(out,
            "Usage: godwit-vmm [OPTIONS]\n"
            "Run one virtual machine on KVM.\n\n"
            "  --memory MiB        guest RAM in MiB, a multiple of 2 (default 256)\n"
            "  --vcpus N           number of vCPUs (default 1)\n"
            "  --kernel PATH       PVH ELF kernel or Linux bzImage to boot\n"
            "  --initrd PATH       initial ramdisk\n"
            "  --cmdline STRING    kernel (or test guest) command line\n"
            "  --test-guest        boot the built-in test guest\n"
            "  --qmp PATH          listen for QMP clients on this Unix socket\n"
            "  --serial PATH|stdio|none\n"
            "                      where COM1 goes (default stdio: stdin is the guest's\n"
            "                      serial input, stdout its output; VMM messages go to stderr)\n"
            "  --name NAME         VM name (shown in logs and QMP)\n"
            "  --uuid UUID         VM UUID (QMP query-uuid; checked against an incoming\n"
            "                      migration's)\n"
            "  --incoming          do not boot; wait for an incoming migration (QMP\n"
            "                      migrate-incoming)\n"
            "  --paused            do not start the guest until QMP `cont` (QEMU's -S)\n"
            "  --mem-prealloc      populate all guest RAM at start, in the background\n"
            "                      (QEMU's -mem-prealloc); for --incoming, before the\n"
            "                      stream needs it (post-copy stops it when it begins)\n"
            "  --no-reboot         power off instead of rebooting when the guest resets\n"
            "  --cpu host[,-FEATURE...]\n"
            "                      the guest's CPU: this host's (default), less the features\n"
            "                      named (and what depends on them), e.g. host,-avx512f,-invtsc\n"
            "  --log-level LEVEL   error, warn, info (default) or debug\n"
            "  --help              show this help\n"
            "  --version           show the version\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || *s == '-')
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return -EINVAL;
    *out = v;
    return 0;
}

enum {
    OPT_MEMORY = 256, OPT_VCPUS, OPT_KERNEL, OPT_INITRD, OPT_CMDLINE, OPT_TEST_GUEST,
    OPT_QMP, OPT_SERIAL, OPT_NAME, OPT_UUID, OPT_INCOMING, OPT_NO_REBOOT, OPT_PAUSED, OPT_LOG_LEVEL,
    OPT_CPU, OPT_HELP,
    OPT_MEM_PREALLOC,
    OPT_VERSION,
};

static const struct option long_opts[] = {
    { "memory", required_argument, NULL, OPT_MEMORY },
    { "vcpus", required_argument, NULL, OPT_VCPUS },
    { "kernel", required_argument, NULL, OPT_KERNEL },
    { "initrd", required_argument, NULL, OPT_INITRD },
    { "cmdline", required_argument, NULL, OPT_CMDLINE },
    { "test-guest", no_argument, NULL, OPT_TEST_GUEST },
    { "qmp", required_argument, NULL, OPT_QMP },
    { "serial", required_argument, NULL, OPT_SERIAL },
    { "name", required_argument, NULL, OPT_NAME },
    { "uuid", required_argument, NULL, OPT_UUID },
    { "incoming", no_argument, NULL, OPT_INCOMING },
    { "no-reboot", no_argument, NULL, OPT_NO_REBOOT },
    { "paused", no_argument, NULL, OPT_PAUSED },
    { "mem-prealloc", no_argument, NULL, OPT_MEM_PREALLOC },
    { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
    { "cpu", required_argument, NULL, OPT_CPU },
    { "help", no_argument, NULL, OPT_HELP },
    { "version", no_argument, NULL, OPT_VERSION },
    { NULL, 0, NULL, 0 },
};

static int check_combination(struct vmm_options *o, struct gw_error *err)
{
    if (o->memory_mib == 0 || o->memory_mib % 2 || o->memory_mib > VMM_MAX_MEMORY_MIB)
        return gw_error_set(err, EINVAL, "--memory must be an even number of MiB between 2 and %llu",
                            (unsigned long long)VMM_MAX_MEMORY_MIB);
    if (o->vcpus < 1 || o->vcpus > 64)
        return gw_error_set(err, EINVAL, "--vcpus must be between 1 and 64");
    if (o->kernel && o->test_guest)
        return gw_error_set(err, EINVAL, "--kernel and --test-guest exclude each other");
    if (!o->kernel && !o->test_guest && !o->incoming)
        return gw_error_set(err, EINVAL, "nothing to boot: give --kernel PATH, --test-guest or --incoming");
    if (o->initrd && !o->kernel)
        return gw_error_set(err, EINVAL, "--initrd needs --kernel");
    return 0;
}

int vmm_options_parse(struct vmm_options *o, int argc, char **argv, FILE *help_out,
                      struct gw_error *err)
{
    memset(o, 0, sizeof(*o));
    o->memory_mib = 256;
    o->vcpus = 1;
    o->serial = "stdio";
    o->name = "guest";
    o->log_level = GW_LOG_INFO;
    optind = 0;
    opterr = 0;
    int c;
    uint64_t v;
    while ((c = getopt_long(argc, argv, ":", long_opts, NULL)) != -1) {
        switch (c) {
        case OPT_MEMORY:
            if (parse_u64(optarg, &o->memory_mib) < 0)
                return gw_error_set(err, EINVAL, "--memory: '%s' is not a number of MiB", optarg);
            break;
        case OPT_VCPUS:
            if (parse_u64(optarg, &v) < 0 || v > UINT_MAX)
                return gw_error_set(err, EINVAL, "--vcpus: '%s' is not a number", optarg);
            o->vcpus = (unsigned)v;
            break;
        case OPT_KERNEL: o->kernel = optarg; break;
        case OPT_INITRD: o->initrd = optarg; break;
        case OPT_CMDLINE: o->cmdline = optarg; break;
        case OPT_TEST_GUEST: o->test_guest = true; break;
        case OPT_QMP: o->qmp_path = optarg; break;
        case OPT_SERIAL: o->serial = optarg; break;
        case OPT_NAME:
            if (!*optarg || strlen(optarg) > 63)
                return gw_error_set(err, EINVAL, "--name must be 1 to 63 characters");
            o->name = optarg;
            break;
        case OPT_UUID:
            if (vmm_uuid_parse(optarg, o->uuid) < 0)
                return gw_error_set(err, EINVAL, "--uuid: '%s' is not a UUID", optarg);
            break;
        case OPT_INCOMING: o->incoming = true; break;
        case OPT_NO_REBOOT: o->no_reboot = true; break;
        case OPT_PAUSED: o->paused = true; break;
        case OPT_MEM_PREALLOC: o->mem_prealloc = true; break;
        case OPT_CPU:
            if (cpu_model_parse(optarg, &o->cpu, err) < 0)
                return -err->code;
            break;
        case OPT_LOG_LEVEL:
            o->log_level = gw_log_parse_level(optarg);
            if (o->log_level < 0)
                return gw_error_set(err, EINVAL, "--log-level: unknown level '%s'", optarg);
            break;
        case OPT_HELP:
            vmm_options_usage(help_out);
            return 1;
        case OPT_VERSION:
            fprintf(help_out, "godwit-vmm %s\n", GODWIT_VERSION);
            return 1;
        case ':':
            return gw_error_set(err, EINVAL, "option %s needs an argument", argv[optind - 1]);
        default:
            return gw_error_set(err, EINVAL, "unknown option '%s' (see --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return gw_error_set(err, EINVAL, "unexpected argument '%s' (see --help)", argv[optind]);
    return check_combination(o, err);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int vmm_uuid_parse(const char *s, uint8_t out[16])
{
    if (strlen(s) != 36)
        return -EINVAL;
    unsigned n = 0;
    for (unsigned i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -EINVAL;
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[n++] = (uint8_t)(hi << 4 | lo);
        i++;
    }
    return 0;
}

void vmm_uuid_format(const uint8_t u[16], char *buf)
{
    snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
             u[13], u[14], u[15]);
}
