/* The job state machine, its persistence (hostile files included) and the
 * restart-recovery decisions for every phase. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/job.h"

#define UUID "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ab"

/* fsync as job_save (linked from libgodwit.a) sees it: this definition
 * takes the place of libc's and records what each call synced. */
#define MAX_SYNCED 32
static char synced[MAX_SYNCED][PATH_MAX];
static int nsynced;

int fsync(int fd)
{
    char link[64];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    if (nsynced < MAX_SYNCED) {
        ssize_t n = readlink(link, synced[nsynced], PATH_MAX - 1);
        synced[nsynced++][n > 0 ? n : 0] = '\0';
    }
    return (int)syscall(SYS_fsync, fd);
}

static bool was_synced(const char *path)
{
    char real[PATH_MAX];
    assert_non_null(realpath(path, real));
    for (int i = 0; i < nsynced; i++)
        if (strcmp(synced[i], real) == 0)
            return true;
    return false;
}

static void make_job(struct job *j, enum job_kind k)
{
    struct gw_error e;
    gw_error_init(&e);
    assert_int_equal(job_init(j, k, "job-1", UUID, "vm1", 1000, &e), 0);
}

static void test_names_round_trip(void **state)
{
    for (int p = 0; p < JOB_PHASE__COUNT; p++) {
        enum job_phase back;
        assert_int_equal(job_phase_from_name(job_phase_name(p), &back), 0);
        assert_int_equal(back, p);
    }
    for (int k = 0; k < JOB_KIND__COUNT; k++) {
        enum job_kind back;
        assert_int_equal(job_kind_from_name(job_kind_name(k), &back), 0);
        assert_int_equal(back, k);
    }
    for (int r = 0; r < JOB_RECOVER__COUNT; r++)
        assert_string_not_equal(job_recovery_name(r), "?");
    enum job_phase p;
    assert_int_equal(job_phase_from_name("performing", &p), -EINVAL);
    assert_string_equal(job_phase_name(JOB_PHASE__COUNT), "?");
    assert_string_equal(job_phase_name(JOB_PHASE_PERFORM_POSTCOPY), "perform-postcopy");
}

static void test_init_validates(void **state)
{
    struct job j;
    struct gw_error e;
    gw_error_init(&e);
    assert_int_equal(job_init(&j, JOB_KIND_MIGRATION_OUT, "a/b", UUID, "vm", 0, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "job id"));
    assert_int_equal(job_init(&j, JOB_KIND_MIGRATION_OUT, "ok", "6F1C2D3E-4A5B-4C6D-8E7F-0123456789AB",
                              "vm", 0, NULL), -EINVAL); /* upper case is not canonical */
    assert_int_equal(job_init(&j, JOB_KIND_NONE, "ok", UUID, "vm", 0, NULL), -EINVAL);
    char longname[100];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[99] = '\0';
    assert_int_equal(job_init(&j, JOB_KIND_MODIFY, "ok", UUID, longname, 0, NULL), -EINVAL);
    make_job(&j, JOB_KIND_MIGRATION_OUT);
    assert_int_equal(j.phase, JOB_PHASE_BEGIN);
    make_job(&j, JOB_KIND_MIGRATION_IN);
    assert_int_equal(j.phase, JOB_PHASE_PREPARE);
}

static int hook_calls;
static enum job_phase hook_old;
static void hook(const struct job *j, enum job_phase old, void *opaque)
{
    hook_calls++;
    hook_old = old;
    (void)j;
    (void)opaque;
}

static void go(struct job *j, enum job_phase to)
{
    struct gw_error e;
    gw_error_init(&e);
    int rc = job_set_phase(j, to, 2000, &e);
    if (rc != 0)
        fail_msg("%s", e.msg);
}

static void test_source_happy_path(void **state)
{
    struct job j;
    make_job(&j, JOB_KIND_MIGRATION_OUT);
    j.on_phase = hook;
    hook_calls = 0;
    go(&j, JOB_PHASE_PERFORM);
    go(&j, JOB_PHASE_PERFORM_POSTCOPY);
    assert_false(j.postcopy_started); /* the caller's to set (armed is not switched) */
    go(&j, JOB_PHASE_PERFORM_DONE);
    go(&j, JOB_PHASE_CONFIRM);
    go(&j, JOB_PHASE_DONE);
    assert_int_equal(hook_calls, 5);
    assert_int_equal(hook_old, JOB_PHASE_CONFIRM);
    assert_int_equal(j.phase_ms, 2000);
    assert_false(job_active(&j));
}

static void test_bad_transition_is_refused(void **state)
{
    struct job j;
    struct gw_error e;
    make_job(&j, JOB_KIND_MIGRATION_OUT);
    gw_error_init(&e);
    assert_int_equal(job_set_phase(&j, JOB_PHASE_CONFIRM, 5, &e), -EINVAL);
    assert_string_equal(e.msg, "job job-1 (migration-out): cannot go from phase begin to phase confirm");
    assert_int_equal(j.phase, JOB_PHASE_BEGIN);
    /* a destination phase on a source job */
    assert_int_equal(job_set_phase(&j, JOB_PHASE_FINISH, 5, NULL), -EINVAL);
    go(&j, JOB_PHASE_FAILED);
    /* terminal */
    assert_int_equal(job_set_phase(&j, JOB_PHASE_PERFORM, 5, NULL), -EINVAL);
    make_job(&j, JOB_KIND_MIGRATION_IN);
    assert_int_equal(job_set_phase(&j, JOB_PHASE_PERFORM, 5, NULL), -EINVAL);
    go(&j, JOB_PHASE_FINISH);
    go(&j, JOB_PHASE_POSTCOPY_FAILED);
    go(&j, JOB_PHASE_FINISH);
    go(&j, JOB_PHASE_DONE);
}

static void test_postcopy_failure_and_recovery(void **state)
{
    struct job j;
    make_job(&j, JOB_KIND_MIGRATION_OUT);
    go(&j, JOB_PHASE_PERFORM);
    go(&j, JOB_PHASE_PERFORM_POSTCOPY);
    go(&j, JOB_PHASE_POSTCOPY_FAILED);
    /* --postcopy-resume */
    go(&j, JOB_PHASE_PERFORM_POSTCOPY);
    go(&j, JOB_PHASE_PERFORM_DONE);
    assert_int_equal(job_set_phase(&j, JOB_PHASE_PERFORM, 0, NULL), -EINVAL);
}

static void test_check_free(void **state)
{
    struct job j;
    struct gw_error e;
    memset(&j, 0, sizeof(j));
    assert_int_equal(job_check_free(&j, "start", NULL), 0);
    assert_int_equal(job_check_free(NULL, "start", NULL), 0);
    make_job(&j, JOB_KIND_MIGRATION_OUT);
    go(&j, JOB_PHASE_PERFORM);
    gw_error_init(&e);
    assert_int_equal(job_check_free(&j, "destroy", &e), -EBUSY);
    assert_string_equal(e.msg, "domain vm1: cannot destroy: a migration-out job (job-1) is in phase perform");
}

/* ---- persistence ---------------------------------------------------------- */

static char dir[64];

static int setup_dir(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/gw-test-job-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_job_bytes(const char *text, size_t len)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/jobs", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/jobs/%s.json", dir, UUID);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fwrite(text, 1, len, f);
    fclose(f);
}

static void write_job_file(const char *text) { write_job_bytes(text, strlen(text)); }

static void test_save_load_round_trip(void **state)
{
    struct job j, back;
    struct gw_error e;
    make_job(&j, JOB_KIND_MIGRATION_OUT);
    j.flags = JOB_F_LIVE | JOB_F_POSTCOPY | JOB_F_AUTO_CONVERGE;
    snprintf(j.peer_uri, sizeof(j.peer_uri), "tcp:10.0.0.2:16509");
    snprintf(j.migrate_uri, sizeof(j.migrate_uri), "tcp:10.0.0.2:49152");
    j.vmm_pid = 4242;
    go(&j, JOB_PHASE_PERFORM);
    go(&j, JOB_PHASE_PERFORM_POSTCOPY);
    j.postcopy_started = true;
    job_set_error(&j, "first");
    job_set_error(&j, "second");
    gw_error_init(&e);
    assert_int_equal(job_save(&j, dir, &e), 0);
    assert_int_equal(job_load(&back, dir, UUID, &e), 0);
    assert_int_equal(back.kind, JOB_KIND_MIGRATION_OUT);
    assert_int_equal(back.phase, JOB_PHASE_PERFORM_POSTCOPY);
    assert_string_equal(back.id, "job-1");
    assert_string_equal(back.name, "vm1");
    assert_string_equal(back.peer_uri, j.peer_uri);
    assert_string_equal(back.migrate_uri, j.migrate_uri);
    assert_int_equal(back.flags, j.flags);
    assert_true(back.postcopy_started);
    assert_int_equal(back.vmm_pid, 4242);
    assert_int_equal(back.started_ms, 1000);
    assert_int_equal(back.phase_ms, 2000);
    assert_string_equal(back.error, "first");
    /* overwrite, no temporary left behind */
    go(&j, JOB_PHASE_PERFORM_DONE);
    assert_int_equal(job_save(&j, dir, &e), 0);
    char jobs[256];
    snprintf(jobs, sizeof(jobs), "%s/jobs", dir);
    DIR *d = opendir(jobs);
    assert_non_null(d);
    for (struct dirent *de; (de = readdir(d)) != NULL;)
        if (strstr(de->d_name, ".tmp"))
            fail_msg("temporary file left behind: %s", de->d_name);
    closedir(d);
    assert_int_equal(job_load(&back, dir, UUID, &e), 0);
    assert_int_equal(back.phase, JOB_PHASE_PERFORM_DONE);
    assert_int_equal(job_remove(dir, UUID, &e), 0);
    assert_int_equal(job_load(&back, dir, UUID, &e), -ENOENT);
    assert_int_equal(job_remove(dir, UUID, &e), 0);
    assert_false(gw_error_is_set(&e));
}

static const char *const good =
    "{\"version\":1,\"id\":\"j\",\"kind\":\"migration-in\",\"phase\":\"finish\","
    "\"uuid\":\"" UUID "\",\"name\":\"vm\",\"peer_uri\":\"\",\"migrate_uri\":\"\","
    "\"flags\":[\"postcopy\"],\"postcopy_started\":false,\"vmm_pid\":7,"
    "\"started_ms\":1,\"phase_ms\":2,\"error\":\"\"}";

static void expect_corrupt(const char *text, const char *why)
{
    struct job j;
    struct gw_error e;
    gw_error_init(&e);
    write_job_file(text);
    assert_int_equal(job_load(&j, dir, UUID, &e), -EINVAL);
    if (!strstr(e.msg, why))
        fail_msg("expected '%s' in '%s'", why, e.msg);
    assert_int_equal(j.kind, JOB_KIND_NONE); /* never half-filled */
}

static char *replace(const char *from, const char *to)
{
    static char buf[2048];
    const char *p = strstr(good, from);
    assert_non_null(p);
    snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(p - good), good, to, p + strlen(from));
    return buf;
}

static void test_load_rejects_corrupt_files(void **state)
{
    struct job j;
    write_job_file(good);
    assert_int_equal(job_load(&j, dir, UUID, NULL), 0);
    assert_int_equal(j.phase, JOB_PHASE_FINISH);
    assert_int_equal(j.flags, JOB_F_POSTCOPY);

    /* Read as every state file is (json_text.h): the error says where. */
    expect_corrupt("", "empty (no JSON object in it)");
    expect_corrupt("{\"version\":1,", "the text ends at offset 13 (line 1, column 14) before the JSON object does");
    expect_corrupt("[1,2]", "a JSON array, not an object");
    expect_corrupt("{} {}", "unexpected data after the JSON object at offset 3 (line 1, column 4): \"{}\"");
    expect_corrupt(replace("\"version\":1", "\"version\":2"), "unsupported version");
    expect_corrupt(replace("\"phase\":\"finish\"", "\"phase\":\"perform\""), "not a phase of a migration-in");
    expect_corrupt(replace("\"phase\":\"finish\"", "\"phase\":7"), "'phase' has the wrong type");
    expect_corrupt(replace("\"kind\":\"migration-in\"", "\"kind\":\"none\""), "invalid kind");
    expect_corrupt(replace("\"id\":\"j\"", "\"id\":\"../x\""), "invalid id");
    expect_corrupt(replace(",\"error\":\"\"", ""), "'error' is missing");
    expect_corrupt(replace("\"vmm_pid\":7", "\"vmm_pid\":-7"), "'vmm_pid' is out of range");
    expect_corrupt(replace("\"vmm_pid\":7", "\"vmm_pid\":99999999999"), "'vmm_pid' is out of range");
    expect_corrupt(replace("\"started_ms\":1", "\"started_ms\":1.5"), "'started_ms' has the wrong type");
    expect_corrupt(replace("[\"postcopy\"]", "[\"warp\"]"), "unknown flag 'warp'");
    expect_corrupt(replace("[\"postcopy\"]", "[3]"), "unknown flag");
    expect_corrupt(replace("\"name\":\"vm\"", "\"name\":\"v\\u0000m\""), "NUL byte");
    expect_corrupt(replace("\"version\":1", "\"version\":1,\"extra\":0"), "unexpected member 'extra'");
    expect_corrupt(replace(UUID, "6f1c2d3e-4a5b-4c6d-8e7f-0123456789ac"), "does not match");
    /* NUL bytes after the object were taken for white space (fuzz_store). */
    char nul[1024];
    size_t n = (size_t)snprintf(nul, sizeof(nul), "%s\n", good);
    nul[n++] = '\0';
    write_job_bytes(nul, n);
    struct gw_error e;
    gw_error_init(&e);
    assert_int_equal(job_load(&j, dir, UUID, &e), -EINVAL);
    assert_non_null(strstr(e.msg, "a NUL byte at offset"));
    char big[200];
    memset(big, 'a', sizeof(big) - 1);
    big[199] = '\0';
    char text[1024];
    snprintf(text, sizeof(text), "%s", replace("\"name\":\"vm\"", "\"name\":\"NAME\""));
    char *p = strstr(text, "NAME");
    char tail[1024];
    snprintf(tail, sizeof(tail), "%s", p + 4);
    snprintf(p, sizeof(text) - (size_t)(p - text), "%s%s", big, tail);
    expect_corrupt(text, "name is too long");
}

static void test_load_rejects_huge_and_odd_files(void **state)
{
    char path[256];
    struct job j;
    size_t n = JOB_FILE_MAX + 10;
    char *text = malloc(n + 1);
    memset(text, ' ', n);
    text[n] = '\0';
    text[0] = '{';
    text[n - 1] = '}';
    write_job_file(text);
    free(text);
    assert_int_equal(job_load(&j, dir, UUID, NULL), -EFBIG);
    snprintf(path, sizeof(path), "%s/jobs/%s.json", dir, UUID);
    unlink(path);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(job_load(&j, dir, UUID, NULL), -EINVAL);
    rmdir(path);
    assert_int_equal(job_load(&j, dir, "not-a-uuid", NULL), -EINVAL);
}

struct scan_seen {
    int good, bad;
};

static int scan_cb(const struct job *j, const char *path, const struct gw_error *lerr, void *opaque)
{
    struct scan_seen *s = opaque;
    if (j)
        s->good++;
    else
        s->bad++;
    assert_true(j != NULL || lerr != NULL);
    (void)path;
    return 0;
}

static void test_scan(void **state)
{
    struct scan_seen seen = { 0 };
    char path[256];
    assert_int_equal(job_scan("/nonexistent-gw-dir", scan_cb, &seen, NULL), 0);
    write_job_file(good);
    snprintf(path, sizeof(path), "%s/jobs/junk.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{}", f);
    fclose(f);
    snprintf(path, sizeof(path), "%s/jobs/%s.json.tmp", dir, UUID);
    f = fopen(path, "w");
    fclose(f);
    assert_int_equal(job_scan(dir, scan_cb, &seen, NULL), 0);
    assert_int_equal(seen.good, 1);
    assert_int_equal(seen.bad, 1);
}

/* jobs/ made by job_save is durable before the job in it is acted on:
 * before, the state directory was not synced after the mkdir, and a power
 * cut could take jobs/ with the saved phase away. */
static void test_save_makes_jobs_durable(void **state)
{
    struct job j;
    struct gw_error e;
    char jobs[256];
    make_job(&j, JOB_KIND_MIGRATION_IN);
    gw_error_init(&e);
    nsynced = 0;
    assert_int_equal(job_save(&j, dir, &e), 0);
    assert_true(was_synced(dir)); /* the new jobs/ entry */
    snprintf(jobs, sizeof(jobs), "%s/jobs", dir);
    assert_true(was_synced(jobs)); /* the renamed job file */
    struct stat st;
    assert_int_equal(stat(jobs, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
}

/* A job file must be a regular file: a FIFO in its place hung the
 * daemon's start for ever (its open() waited for a writer). */
static void test_load_fifo(void **state)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/jobs", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s/jobs/%s.json", dir, UUID);
    assert_int_equal(mkfifo(path, 0600), 0);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(5);
        struct job j;
        struct gw_error e;
        gw_error_init(&e);
        int r = job_load(&j, dir, UUID, &e);
        _exit(r == -EINVAL && strstr(e.msg, "not a regular file") ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* The scan at start removes the temporary files of saves a crash cut
 * short, and reports the rest as before. */
static void test_scan_removes_stale_tmp(void **state)
{
    struct scan_seen seen = { 0 };
    char a[256], b[256];
    write_job_file(good);
    snprintf(a, sizeof(a), "%s/jobs/%s.json.tmp", dir, UUID);
    snprintf(b, sizeof(b), "%s/jobs/%s.json.tmp.x1Y2z3", dir, UUID);
    FILE *f = fopen(a, "w");
    fclose(f);
    f = fopen(b, "w");
    fputs("{\"version\":", f);
    fclose(f);
    assert_int_equal(job_scan(dir, scan_cb, &seen, NULL), 0);
    assert_int_equal(seen.good, 1);
    assert_int_equal(seen.bad, 0);
    assert_int_equal(access(a, F_OK), -1);
    assert_int_equal(access(b, F_OK), -1);
}

/* ---- recovery: every phase --------------------------------------------------- */

static enum job_recovery rec_vmm(enum job_kind k, enum job_phase p, bool alive,
                                 const char *status, bool vmm_switched)
{
    struct job j;
    make_job(&j, k);
    j.phase = p;
    j.postcopy_started = p == JOB_PHASE_PERFORM_POSTCOPY || p == JOB_PHASE_POSTCOPY_FAILED;
    return job_recovery_action(&j, alive, status, vmm_switched);
}

/* A VMM that does not say whether it switched counts as switched. */
static enum job_recovery rec(enum job_kind k, enum job_phase p, bool alive, const char *status)
{
    return rec_vmm(k, p, alive, status, true);
}

#define OUT JOB_KIND_MIGRATION_OUT
#define IN JOB_KIND_MIGRATION_IN

static void test_recovery_source(void **state)
{
    assert_int_equal(rec(OUT, JOB_PHASE_BEGIN, true, NULL), JOB_RECOVER_NOTHING);
    assert_int_equal(rec(OUT, JOB_PHASE_BEGIN, false, NULL), JOB_RECOVER_CRASHED);
    /* pre-copy in flight, or even completed: Finish never went out */
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM, true, "active"), JOB_RECOVER_RESUME_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM, true, "setup"), JOB_RECOVER_RESUME_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM, true, "failed"), JOB_RECOVER_RESUME_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM, true, "completed"), JOB_RECOVER_RESUME_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM, true, NULL), JOB_RECOVER_RESUME_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM, true, "postcopy-active"), JOB_RECOVER_POSTCOPY_FAILED);
    /* ... and that action can be carried out from perform */
    assert_true(job_transition_allowed(OUT, JOB_PHASE_PERFORM, JOB_PHASE_POSTCOPY_FAILED));
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM, false, NULL), JOB_RECOVER_CRASHED);
    /* post-copy requested */
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_POSTCOPY, true, "active"), JOB_RECOVER_RESUME_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_POSTCOPY, true, "postcopy-active"), JOB_RECOVER_CONTINUE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_POSTCOPY, true, "completed"), JOB_RECOVER_CONTINUE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_POSTCOPY, true, "postcopy-paused"), JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_POSTCOPY, true, "postcopy-recover"), JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_POSTCOPY, true, "failed"), JOB_RECOVER_POSTCOPY_FAILED);
    /* armed for a switch (by command, or by the VMM after its first pass)
     * that the VMM says never handed the guest over: the source owns it */
    assert_int_equal(rec_vmm(OUT, JOB_PHASE_PERFORM_POSTCOPY, true, "failed", false),
                     JOB_RECOVER_RESUME_SOURCE);
    assert_int_equal(rec_vmm(OUT, JOB_PHASE_PERFORM_POSTCOPY, true, "completed", false),
                     JOB_RECOVER_CONTINUE);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_POSTCOPY, false, NULL), JOB_RECOVER_CRASHED);
    /* the outcome lies with the destination */
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_DONE, true, "completed"), JOB_RECOVER_ASK_PEER);
    assert_int_equal(rec(OUT, JOB_PHASE_PERFORM_DONE, false, NULL), JOB_RECOVER_ASK_PEER);
    assert_int_equal(rec(OUT, JOB_PHASE_CONFIRM, true, "completed"), JOB_RECOVER_KILL_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_CONFIRM, false, NULL), JOB_RECOVER_KILL_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_CONFIRM_CANCELLED, true, "cancelled"), JOB_RECOVER_RESUME_SOURCE);
    assert_int_equal(rec(OUT, JOB_PHASE_CONFIRM_CANCELLED, false, NULL), JOB_RECOVER_CRASHED);
    assert_int_equal(rec(OUT, JOB_PHASE_POSTCOPY_FAILED, true, "postcopy-paused"), JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(rec(OUT, JOB_PHASE_POSTCOPY_FAILED, false, NULL), JOB_RECOVER_CRASHED);
    assert_int_equal(rec(OUT, JOB_PHASE_DONE, true, NULL), JOB_RECOVER_NOTHING);
    assert_int_equal(rec(OUT, JOB_PHASE_FAILED, true, NULL), JOB_RECOVER_NOTHING);
}

static void test_recovery_destination(void **state)
{
    assert_int_equal(rec(IN, JOB_PHASE_PREPARE, true, NULL), JOB_RECOVER_KILL_INCOMING);
    assert_int_equal(rec(IN, JOB_PHASE_PREPARE, true, "active"), JOB_RECOVER_KILL_INCOMING);
    assert_int_equal(rec(IN, JOB_PHASE_PREPARE, true, "completed"), JOB_RECOVER_CONTINUE);
    assert_int_equal(rec(IN, JOB_PHASE_PREPARE, true, "postcopy-active"), JOB_RECOVER_CONTINUE);
    /* paused by a break before Finish: the watcher makes it post-copy failed */
    assert_int_equal(rec(IN, JOB_PHASE_PREPARE, true, "postcopy-paused"), JOB_RECOVER_CONTINUE);
    assert_int_equal(rec(IN, JOB_PHASE_PREPARE, false, NULL), JOB_RECOVER_KILL_INCOMING);
    /* pre-copy, or a post-copy whose last page arrived: Finish completes */
    assert_int_equal(rec(IN, JOB_PHASE_FINISH, true, "completed"), JOB_RECOVER_RESUME_INCOMING);
    /* a pre-copy stream that failed, with no switch: the source still owns the guest */
    assert_int_equal(rec_vmm(IN, JOB_PHASE_FINISH, true, "failed", false), JOB_RECOVER_KILL_INCOMING);
    assert_int_equal(rec_vmm(IN, JOB_PHASE_FINISH, true, "active", false), JOB_RECOVER_KILL_INCOMING);
    assert_int_equal(rec(IN, JOB_PHASE_FINISH, false, NULL), JOB_RECOVER_KILL_INCOMING);
    assert_int_equal(rec(IN, JOB_PHASE_POSTCOPY_FAILED, false, NULL), JOB_RECOVER_KILL_INCOMING);
    assert_int_equal(rec(IN, JOB_PHASE_DONE, true, NULL), JOB_RECOVER_NOTHING);
    assert_int_equal(rec(IN, JOB_PHASE_FAILED, false, NULL), JOB_RECOVER_NOTHING);
    assert_int_equal(rec(JOB_KIND_MODIFY, JOB_PHASE_NONE, true, NULL), JOB_RECOVER_NOTHING);
}

/* A destination restarted in finish after a post-copy switch: the guest
 * runs there (or ran, and is paused by a break) while pages still come
 * from the source. Its job goes on, watched as before the restart, until
 * the migration completes, fails or is recovered; the VMM is never
 * killed (it holds the only running copy). */
static void test_recovery_destination_postcopy_finish(void **state)
{
    static const char *const pc[] = { "postcopy-active", "postcopy-paused", "postcopy-recover" };
    for (size_t i = 0; i < sizeof(pc) / sizeof(pc[0]); i++) {
        assert_int_equal(rec(IN, JOB_PHASE_FINISH, true, pc[i]), JOB_RECOVER_CONTINUE);
        assert_int_equal(rec_vmm(IN, JOB_PHASE_FINISH, true, pc[i], false), JOB_RECOVER_CONTINUE);
    }
    /* failed after the switch (the VMM says it switched, or does not say) */
    assert_int_equal(rec(IN, JOB_PHASE_FINISH, true, "failed"), JOB_RECOVER_CONTINUE);
    /* the job recorded the switch: a VMM that does not answer query-migrate
     * (no status) is not killed either */
    struct job j;
    make_job(&j, IN);
    j.phase = JOB_PHASE_FINISH;
    j.postcopy_started = true;
    assert_int_equal(job_recovery_action(&j, true, NULL, true), JOB_RECOVER_CONTINUE);
    assert_int_equal(job_recovery_action(&j, true, "failed", false), JOB_RECOVER_CONTINUE);
    assert_int_equal(job_recovery_action(&j, true, "completed", true), JOB_RECOVER_RESUME_INCOMING);
    assert_int_equal(job_recovery_action(&j, false, NULL, true), JOB_RECOVER_KILL_INCOMING);
    j.phase = JOB_PHASE_PREPARE; /* no answer in prepare after a switch: watched, not killed */
    assert_int_equal(job_recovery_action(&j, true, NULL, true), JOB_RECOVER_CONTINUE);
}

/* A destination restarted while its job is in postcopy-failed: the job is
 * kept and watched again (the source's recovery moves it back to finish,
 * the watcher ends it), the VMM is kept whatever it says: its memory is
 * the only copy of what it received. */
static void test_recovery_destination_postcopy_failed(void **state)
{
    static const char *const any[] = { NULL, "postcopy-paused", "postcopy-recover", "postcopy-active",
                                       "completed", "failed", "active", "bogus" };
    for (size_t i = 0; i < sizeof(any) / sizeof(any[0]); i++)
        for (int sw = 0; sw < 2; sw++)
            assert_int_equal(rec_vmm(IN, JOB_PHASE_POSTCOPY_FAILED, true, any[i], sw),
                             JOB_RECOVER_CONTINUE);
    assert_int_equal(rec(IN, JOB_PHASE_POSTCOPY_FAILED, false, NULL), JOB_RECOVER_KILL_INCOMING);
}

/* The Finish a restarted source sends (again) says post-copy by the job's
 * actual mode: pre-copy only when neither the job nor its VMM saw a
 * switch (a VMM that does not say, or is gone, counts as switched). */
static void test_finish_mode_after_restart(void **state)
{
    struct job j;
    make_job(&j, OUT);
    j.phase = JOB_PHASE_PERFORM_DONE;
    assert_false(job_finish_postcopy(&j, false));
    assert_true(job_finish_postcopy(&j, true));
    j.phase = JOB_PHASE_PERFORM_POSTCOPY; /* armed (hybrid), completed before any switch */
    assert_false(job_finish_postcopy(&j, false));
    j.postcopy_started = true;
    assert_true(job_finish_postcopy(&j, false));
    j.postcopy_started = false;
    j.phase = JOB_PHASE_POSTCOPY_FAILED; /* only ever reached in post-copy */
    assert_true(job_finish_postcopy(&j, false));
}

/* Every phase of every kind has a defined answer for every status. */
static void test_recovery_total(void **state)
{
    static const char *const statuses[] = { NULL, "setup", "active", "device", "completed",
                                            "failed", "cancelled", "postcopy-active",
                                            "postcopy-paused", "bogus" };
    for (int k = 1; k < JOB_KIND__COUNT; k++)
        for (int p = 0; p < JOB_PHASE__COUNT; p++) {
            if (!job_phase_allowed(k, p))
                continue;
            for (size_t s = 0; s < sizeof(statuses) / sizeof(statuses[0]); s++)
                for (int alive = 0; alive < 2; alive++) {
                    enum job_recovery r = rec(k, p, alive, statuses[s]);
                    assert_true(r < JOB_RECOVER__COUNT);
                    /* a dead VMM is never resumed */
                    if (!alive)
                        assert_true(r != JOB_RECOVER_RESUME_SOURCE && r != JOB_RECOVER_RESUME_INCOMING);
                }
        }
}

static void test_recovery_after_peer(void **state)
{
    struct job j;
    make_job(&j, OUT);
    j.phase = JOB_PHASE_PERFORM_DONE;
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_RUNNING), JOB_RECOVER_KILL_SOURCE);
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_PREPARED), JOB_RECOVER_CONTINUE);
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_FAILED), JOB_RECOVER_RESUME_SOURCE);
    /* perform-done: the guest was handed over; a destination that has no
     * record of the job (it restarted, or migrated the domain on) is no
     * word that it does not run it: never resume, keep waiting */
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_UNKNOWN), JOB_RECOVER_WAIT_PEER);
    assert_int_equal(job_recovery_after_peer(&j, false, NULL, false, JOB_PEER_UNKNOWN), JOB_RECOVER_CRASHED);
    /* the VMM says (or does not deny) it handed the guest over by
     * post-copy, though the job did not record it (a restart within a
     * poll interval): never resumed, never quit before completed */
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", true, JOB_PEER_FAILED), JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(job_recovery_after_peer(&j, true, "failed", true, JOB_PEER_RUNNING), JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(job_recovery_after_peer(&j, true, "failed", false, JOB_PEER_RUNNING), JOB_RECOVER_KILL_SOURCE);
    assert_int_equal(job_recovery_after_peer(&j, false, NULL, false, JOB_PEER_FAILED), JOB_RECOVER_CRASHED);
    /* never resume blindly */
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_UNREACHABLE), JOB_RECOVER_WAIT_PEER);
    j.postcopy_started = true;
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_FAILED), JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(job_recovery_after_peer(&j, true, "postcopy-paused", false, JOB_PEER_POSTCOPY_FAILED), JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(job_recovery_after_peer(&j, false, NULL, false, JOB_PEER_POSTCOPY_FAILED), JOB_RECOVER_CRASHED);
    struct job in;
    make_job(&in, IN);
    assert_int_equal(job_peer_outcome_of(NULL, false), JOB_PEER_UNKNOWN);
    assert_int_equal(job_peer_outcome_of(NULL, true), JOB_PEER_RUNNING);
    assert_int_equal(job_peer_outcome_of(&in, false), JOB_PEER_PREPARED);
    in.phase = JOB_PHASE_FINISH;
    assert_int_equal(job_peer_outcome_of(&in, true), JOB_PEER_RUNNING);
    in.phase = JOB_PHASE_POSTCOPY_FAILED;
    assert_int_equal(job_peer_outcome_of(&in, false), JOB_PEER_POSTCOPY_FAILED);
    in.phase = JOB_PHASE_FAILED;
    assert_int_equal(job_peer_outcome_of(&in, false), JOB_PEER_FAILED);
    in.phase = JOB_PHASE_DONE;
    assert_int_equal(job_peer_outcome_of(&in, false), JOB_PEER_RUNNING);
    enum job_peer_outcome o;
    assert_int_equal(job_peer_outcome_from_name("prepared", &o), 0);
    assert_int_equal(o, JOB_PEER_PREPARED);
    assert_int_equal(job_peer_outcome_from_name("maybe", &o), -EINVAL);
}

/* The destination says running while our VMM still serves post-copy
 * pages (a source daemon restarted during Confirm's wait): never quit it
 * before the stream completed. */
static void test_recovery_after_peer_postcopy(void **state)
{
    struct job j;
    make_job(&j, OUT);
    j.phase = JOB_PHASE_PERFORM_DONE;
    j.postcopy_started = true;
    assert_int_equal(job_recovery_after_peer(&j, true, "postcopy-active", false, JOB_PEER_RUNNING),
                     JOB_RECOVER_CONFIRM_POSTCOPY);
    assert_int_equal(job_recovery_after_peer(&j, true, "postcopy-recover", false, JOB_PEER_RUNNING),
                     JOB_RECOVER_CONFIRM_POSTCOPY);
    /* paused while the destination runs the guest: perhaps only the last
     * message was lost; Confirm's wait asks again and resumes it once */
    assert_int_equal(job_recovery_after_peer(&j, true, "postcopy-paused", false, JOB_PEER_RUNNING),
                     JOB_RECOVER_CONFIRM_POSTCOPY);
    assert_int_equal(job_recovery_after_peer(&j, true, "postcopy-paused", false, JOB_PEER_POSTCOPY_FAILED),
                     JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(job_recovery_after_peer(&j, true, "failed", false, JOB_PEER_RUNNING),
                     JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(job_recovery_after_peer(&j, true, NULL, false, JOB_PEER_RUNNING),
                     JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_RUNNING),
                     JOB_RECOVER_KILL_SOURCE);
    assert_int_equal(job_recovery_after_peer(&j, false, NULL, false, JOB_PEER_RUNNING),
                     JOB_RECOVER_KILL_SOURCE);
    assert_string_equal(job_recovery_name(JOB_RECOVER_CONFIRM_POSTCOPY), "confirm-postcopy");
    /* a post-copy status never lets any peer answer quit the VMM */
    static const char *const pc[] = { "postcopy-active", "postcopy-paused", "postcopy-recover" };
    for (size_t i = 0; i < sizeof(pc) / sizeof(pc[0]); i++)
        for (int p = 0; p < JOB_PEER__COUNT; p++)
            assert_int_not_equal(job_recovery_after_peer(&j, true, pc[i], false, (enum job_peer_outcome)p),
                                 JOB_RECOVER_KILL_SOURCE);
}

/* Confirm's post-copy wait recorded postcopy-failed (a daemon stop, a
 * failed query) but the VMM completed the stream: a success, once the
 * destination says it runs the guest. */
static void test_recovery_postcopy_failed_completed(void **state)
{
    assert_int_equal(rec(OUT, JOB_PHASE_POSTCOPY_FAILED, true, "completed"), JOB_RECOVER_ASK_PEER);
    assert_int_equal(rec(OUT, JOB_PHASE_POSTCOPY_FAILED, true, "postcopy-active"),
                     JOB_RECOVER_POSTCOPY_FAILED);
    assert_int_equal(rec(OUT, JOB_PHASE_POSTCOPY_FAILED, false, "completed"), JOB_RECOVER_CRASHED);
    struct job j;
    make_job(&j, OUT);
    j.phase = JOB_PHASE_POSTCOPY_FAILED;
    j.postcopy_started = true;
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_RUNNING),
                     JOB_RECOVER_KILL_SOURCE);
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_PREPARED),
                     JOB_RECOVER_CONTINUE);
    assert_int_equal(job_recovery_after_peer(&j, true, "completed", false, JOB_PEER_FAILED),
                     JOB_RECOVER_POSTCOPY_FAILED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_init_validates),
        cmocka_unit_test(test_source_happy_path),
        cmocka_unit_test(test_bad_transition_is_refused),
        cmocka_unit_test(test_postcopy_failure_and_recovery),
        cmocka_unit_test(test_check_free),
        cmocka_unit_test_setup_teardown(test_save_load_round_trip, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_load_rejects_corrupt_files, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_load_rejects_huge_and_odd_files, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_scan, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_save_makes_jobs_durable, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_load_fifo, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_scan_removes_stale_tmp, setup_dir, teardown_dir),
        cmocka_unit_test(test_recovery_source),
        cmocka_unit_test(test_recovery_destination),
        cmocka_unit_test(test_recovery_destination_postcopy_finish),
        cmocka_unit_test(test_recovery_destination_postcopy_failed),
        cmocka_unit_test(test_finish_mode_after_restart),
        cmocka_unit_test(test_recovery_total),
        cmocka_unit_test(test_recovery_after_peer),
        cmocka_unit_test(test_recovery_after_peer_postcopy),
        cmocka_unit_test(test_recovery_postcopy_failed_completed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
