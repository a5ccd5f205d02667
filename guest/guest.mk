# placeholder until the test guest lands
$(GUEST_ELF):
	@mkdir -p $(dir $@)
	@touch $@
