#define LOG_PREFIX "i8042"
#include "devices/i8042.h"

#include <errno.h>

#include <pthread.h>
#include <stdlib.h>

#include "common/log.h"

#define STATUS_OBF     0x01 /* output buffer full */
#define STATUS_SYS     0x04 /* system flag: self-test passed */
#define STATUS_CMD     0x08 /* last write was a command */
#define STATUS_UNLOCK  0x10 /* keyboard not inhibited */

#define CMD_READ_CB    0x20
#define CMD_WRITE_CB   0x60
#define CMD_AUX_OFF    0xa7
#define CMD_AUX_ON     0xa8
#define CMD_AUX_TEST   0xa9
#define CMD_SELF_TEST  0xaa
#define CMD_KBD_TEST   0xab
#define CMD_KBD_OFF    0xad
#define CMD_KBD_ON     0xae
#define CMD_READ_OUT   0xd0
#define CMD_WRITE_OUT  0xd1
#define CMD_WRITE_KBD_OUT 0xd2
#define CMD_PULSE_RST  0xfe

struct i8042 {
    pthread_mutex_t lock;
    i8042_reset_fn reset;
    void *opaque;
    uint8_t status, cmd_byte, out_port, pending_cmd, data;
};

static void reset_locked(struct i8042 *k)
{
    k->status = STATUS_SYS | STATUS_UNLOCK;
    k->cmd_byte = 0x45;
    k->out_port = 0x01;
    k->pending_cmd = 0;
}

struct i8042 *i8042_new(i8042_reset_fn reset, void *opaque)
{
    struct i8042 *k = calloc(1, sizeof(*k));
    if (!k)
        return NULL;
    int r = pthread_mutex_init(&k->lock, NULL);
    if (r) {
        free(k);
        errno = r;
        return NULL;
    }
    k->reset = reset;
    k->opaque = opaque;
    reset_locked(k);
    return k;
}

void i8042_free(struct i8042 *k)
{
    if (!k)
        return;
    pthread_mutex_destroy(&k->lock);
    free(k);
}

void i8042_reset(struct i8042 *k)
{
    pthread_mutex_lock(&k->lock);
    reset_locked(k);
    pthread_mutex_unlock(&k->lock);
}

static void reply(struct i8042 *k, uint8_t v)
{
    k->data = v;
    k->status |= STATUS_OBF;
}

/* Returns true when the guest asked for a CPU reset. */
static bool command(struct i8042 *k, uint8_t cmd)
{
    k->status |= STATUS_CMD;
    switch (cmd) {
    case CMD_READ_CB: reply(k, k->cmd_byte); break;
    case CMD_WRITE_CB:
    case CMD_WRITE_OUT:
    case CMD_WRITE_KBD_OUT: k->pending_cmd = cmd; break;
    case CMD_SELF_TEST: reply(k, 0x55); break;
    case CMD_KBD_TEST:
    case CMD_AUX_TEST: reply(k, 0x00); break;
    case CMD_READ_OUT: reply(k, k->out_port); break;
    case CMD_KBD_OFF: k->cmd_byte |= 0x10; break;
    case CMD_KBD_ON: k->cmd_byte &= (uint8_t)~0x10; break;
    case CMD_AUX_OFF: k->cmd_byte |= 0x20; break;
    case CMD_AUX_ON: k->cmd_byte &= (uint8_t)~0x20; break;
    case CMD_PULSE_RST: return true;
    default:
        if ((cmd & 0xf0) == 0xf0 && !(cmd & 1))
            return true; /* pulse output lines with bit 0 (reset) low */
        break;
    }
    return false;
}

static bool data_write(struct i8042 *k, uint8_t v)
{
    k->status &= (uint8_t)~STATUS_CMD;
    uint8_t pending = k->pending_cmd;
    k->pending_cmd = 0;
    if (pending == CMD_WRITE_CB) {
        k->cmd_byte = v;
        return false;
    }
    if (pending == CMD_WRITE_OUT) {
        k->out_port = v;
        return !(v & 1);
    }
    if (pending == CMD_WRITE_KBD_OUT) {
        reply(k, v); /* appears as if the keyboard sent it */
        return false;
    }
    /* A byte for the keyboard: none is attached; answer like a controller
     * with a timeout (0xfe = resend) so drivers give up quickly. */
    reply(k, 0xfe);
    return false;
}

static void pio_read(void *dev, uint16_t off, uint8_t *data, unsigned size)
{
    struct i8042 *k = dev;
    pthread_mutex_lock(&k->lock);
    if (off == 0) {
        data[0] = k->data;
        k->status &= (uint8_t)~STATUS_OBF;
    } else if (off == 4) {
        data[0] = k->status;
    } else {
        data[0] = 0xff;
    }
    pthread_mutex_unlock(&k->lock);
    for (unsigned i = 1; i < size; i++)
        data[i] = 0xff;
}

static void pio_write(void *dev, uint16_t off, const uint8_t *data, unsigned size)
{
    struct i8042 *k = dev;
    bool reset = false;
    pthread_mutex_lock(&k->lock);
    if (off == 0)
        reset = data_write(k, data[0]);
    else if (off == 4)
        reset = command(k, data[0]);
    pthread_mutex_unlock(&k->lock);
    if (reset) {
        log_info("guest pulsed the CPU reset line");
        if (k->reset)
            k->reset(k->opaque);
    }
}

const struct pio_dev_ops i8042_pio_ops = { .read = pio_read, .write = pio_write };
