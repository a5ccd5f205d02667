/* The built-in test guest: the ELF image, embedded in godwit-vmm. */
    .section .rodata
    .balign 16
    .global test_guest_elf
    .global test_guest_elf_end
test_guest_elf:
    .incbin GUEST_ELF_PATH
test_guest_elf_end:
    .section .note.GNU-stack,"",@progbits
