/* godwit's connection to the daemon, opened on first use. */
#include <errno.h>

#include "cli/cli.h"
#include "control/control_client.h"

#define CLI_CONNECT_TIMEOUT_MS 30000

int cli_call(struct cli *cli, const char *command, struct json_object *args,
             struct json_object **ret, struct gw_error *err)
{
    if (ret)
        *ret = NULL;
    if (!cli->conn) {
        struct gw_error e; /* err may be NULL: the caller wants no message */
        gw_error_init(&e);
        cli->conn = ctl_client_connect(cli->uri, &cli->tls, "godwit " GODWIT_VERSION,
                                       CLI_CONNECT_TIMEOUT_MS, &e);
        if (!cli->conn) {
            json_object_put(args);
            return gw_error_set(err, e.code, "%s", e.msg);
        }
    }
    /* No deadline: start, destroy and the like wait for the VMM; the daemon bounds them. */
    return ctl_client_call(cli->conn, command, args, ret, -1, err);
}

int cli_next_event(struct cli *cli, int timeout_ms, struct json_object **ev, struct gw_error *err)
{
    return ctl_client_next_event(cli->conn, timeout_ms, ev, err);
}

void cli_disconnect(struct cli *cli)
{
    ctl_client_free(cli->conn);
    cli->conn = NULL;
}
