/* The VMM's control plane: the QMP server and the commands godwit-vmm
 * registers on it (run control, memory dump, migration).
 * Constructors return NULL with the reason in err; operations 0 or -errno.
 * Main (event-loop) thread only, except vmm_control_event (any thread). */
#ifndef GW_VMM_VMM_CONTROL_H
#define GW_VMM_VMM_CONTROL_H

#include <json-c/json.h>

#include "common/error.h"
#include "common/evloop.h"

struct machine;
struct vmm_control;

struct vmm_control *vmm_control_new(struct evloop *loop, struct machine *m, struct gw_error *err);
void vmm_control_free(struct vmm_control *c);
int vmm_control_listen(struct vmm_control *c, const char *path, struct gw_error *err);
/* Send an event to every client; takes ownership of data (may be NULL). */
void vmm_control_event(struct vmm_control *c, const char *name, struct json_object *data);

#endif
