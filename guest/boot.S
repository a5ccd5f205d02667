/* Test guest entry code: the PVH note and 32-bit entry, the AP real-mode
 * trampoline, static identity page tables, the GDT and interrupt stubs. */
#define KCODE 0x08
#define KDATA 0x10
#define PTE_FLAGS    0x87   /* present, writable, user, 2 MiB page */
#define PTE_FLAGS_UC 0x9f   /* ... and uncached (PCD|PWT) for the MMIO hole */
#define MAPPED_GIB   20

    .section .note.pvh, "a", @note
    .balign 4
    .long 4                 /* name size */
    .long 4                 /* desc size */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_start

/* ---- AP trampoline: must be the first page of the image (SIPI vector) ---- */
    .section .trampoline, "ax"
    .code16
    .global ap_trampoline
ap_trampoline:
    cli
    mov %cs, %ax
    mov %ax, %ds
    lgdtl tramp_gdt_ptr - ap_trampoline
    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax          /* PAE */
    mov %eax, %cr4
    mov $0xC0000080, %ecx   /* EFER */
    rdmsr
    or $0x100, %eax         /* LME */
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax    /* PG | PE */
    mov %eax, %cr0
    ljmpl $KCODE, $ap_long
    .balign 8
tramp_gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

/* ---- BSP entry: 32-bit protected mode, %ebx -> hvm_start_info ---- */
    .text
    .code32
    .global pvh_start
pvh_start:
    cli
    mov %ebx, %edi
    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    lgdt gdt_ptr
    ljmp $KCODE, $bsp_long

    .code64
bsp_long:
    mov $KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    lea kstacks + 8192(%rip), %rsp
    /* %edi still holds the start_info address (zero-extended). */
    mov %edi, %edi
    call kmain_bsp
1:  hlt
    jmp 1b

ap_long:
    mov $KDATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %eax, %eax
    mov %ax, %fs
    mov %ax, %gs
    /* cpu index: our APIC id looked up in apic_to_cpu (kernel.c). */
    movabs 0xfee00020, %eax
    shr $24, %eax
    movzbl apic_to_cpu(%rax), %edi
    cmp $16, %edi           /* MAX_CPUS */
    jae 2f
    mov %rdi, %rax
    inc %rax
    shl $13, %rax           /* * KSTACK_SIZE (8192) */
    lea kstacks(%rip), %rsp
    add %rax, %rsp
    call kmain_ap
2:  hlt
    jmp 2b

/* Enter ring 3: rdi = rip, rsi = rsp, edx = cpu (passed in rdi to user) */
    .global enter_user
enter_user:
    mov %rdx, %r8
    pushq $0x1b             /* ss: user data | 3 */
    pushq %rsi              /* rsp */
    pushq $0x202            /* rflags: IF */
    pushq $0x23             /* cs: user code | 3 */
    pushq %rdi              /* rip */
    mov $0x1b, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %r8, %rdi
    iretq

/* ---- interrupt stubs ---- */
    .macro ISR num
    .if (\num == 8) || (\num >= 10 && \num <= 14) || (\num == 17) || (\num == 21) || (\num == 29) || (\num == 30)
    .else
    pushq $0
    .endif
    pushq $\num
    jmp isr_common
    .endm

    .balign 16
    .altmacro
isr_stubs:
    .set i, 0
    .rept 256
    .balign 16
    ISR %i
    .set i, i + 1
    .endr
    .noaltmacro

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, %rdi
    cld
    call isr_dispatch
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    iretq

    .section .rodata
    .global isr_stub_base
isr_stub_base:
    .quad isr_stubs

/* ---- GDT (TSS descriptors are filled in by kernel.c) ---- */
    .data
    .balign 16
    .global gdt
gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08 kernel code 64 */
    .quad 0x00cf92000000ffff    /* 0x10 kernel data */
    .quad 0x00cff2000000ffff    /* 0x18 user data */
    .quad 0x00affa000000ffff    /* 0x20 user code 64 */
    .quad 0                     /* 0x28 unused */
    .global gdt_tss
gdt_tss:
    .fill 16 * 2, 8, 0          /* 0x30 + 16*cpu: TSS of each cpu */
gdt_end:
    .balign 8
    .global gdt_ptr
gdt_ptr:
    .word gdt_end - gdt - 1
    .quad gdt

/* ---- identity page tables: 0..32 GiB with 2 MiB pages, user-accessible ---- */
    .section .pagetables, "aw"
    .balign 4096
    .global pml4
pml4:
    .quad pdpt + 0x07
    .fill 511, 8, 0
pdpt:
    .set n, 0
    .rept MAPPED_GIB
    .quad pd + n * 4096 + 0x07
    .set n, n + 1
    .endr
    .fill 512 - MAPPED_GIB, 8, 0
pd:
    .set a, 0
    .rept MAPPED_GIB * 512
    .if (a >= 0xC0000000) && (a < 0x100000000)
    .quad a + PTE_FLAGS_UC
    .else
    .quad a + PTE_FLAGS
    .endif
    .set a, a + 0x200000
    .endr

    .section .note.GNU-stack, "", @progbits
