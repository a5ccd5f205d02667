# The test guest: a freestanding PVH ELF, built with its own flags.
GUEST_DIR    := $(BUILD)/guest
GUEST_CFLAGS := -std=gnu11 -O2 -g -ffreestanding -fno-pic -no-pie -fno-stack-protector \
	-mno-red-zone -fno-asynchronous-unwind-tables -fcf-protection=none -Wall -Wextra -Werror \
	-Wno-unused-parameter -MMD -MP
GUEST_KFLAGS := $(GUEST_CFLAGS) -mgeneral-regs-only
GUEST_OBJS   := $(GUEST_DIR)/boot.o $(GUEST_DIR)/kernel.o $(GUEST_DIR)/lib.o $(GUEST_DIR)/user.o

$(GUEST_DIR)/boot.o: guest/boot.S
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AS      $<")
	$(Q)$(CC) -c -fno-pic $< -o $@

$(GUEST_DIR)/kernel.o $(GUEST_DIR)/lib.o: $(GUEST_DIR)/%.o: guest/%.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(GUEST_KFLAGS) -c $< -o $@

$(GUEST_DIR)/user.o: guest/user.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(GUEST_CFLAGS) -mno-avx -c $< -o $@

$(GUEST_ELF): $(GUEST_OBJS) guest/guest.ld
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) -nostdlib -static -no-pie -Wl,-T,guest/guest.ld -Wl,--build-id=none \
		-Wl,-z,noexecstack -Wl,--no-warn-rwx-segments -o $@ $(GUEST_OBJS)
