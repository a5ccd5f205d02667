/* The VMM's control plane: the QMP server and the commands godwit-vmm
 * registers on it (run control, memory dump, migration).
 * Constructors return NULL with the reason in err; operations 0 or -errno.
 * Main (event-loop) thread only, except vmm_control_event (any thread). */
#ifndef GW_VMM_VMM_CONTROL_H
#define GW_VMM_VMM_CONTROL_H

#include <json-c/json.h>

#include "common/error.h"
#include "common/evloop.h"
#include "vmm/machine.h"

struct machine;
struct vmm_control;

struct vmm_control *vmm_control_new(struct evloop *loop, struct machine *m, struct gw_error *err);
void vmm_control_free(struct vmm_control *c);
int vmm_control_listen(struct vmm_control *c, const char *path, struct gw_error *err);
/* struct machine_ops.guest_request: may the reset (reset true) or power-off
 * the guest asked for happen now, given the migrations? During an outgoing
 * one not handed over yet a reset cancels it and waits for its end; once
 * the guest was handed over (post-copy started, or postmigrate) both are
 * dropped; a post-copy destination resets only with every page here.
 * c may be NULL (MACHINE_GO). */
enum machine_verdict vmm_control_guest_request(struct vmm_control *c, bool reset);
/* Send an event to every client; takes ownership of data (may be NULL). */
void vmm_control_event(struct vmm_control *c, const char *name, struct json_object *data);

#endif
