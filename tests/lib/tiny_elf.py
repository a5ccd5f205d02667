"""Build tiny PVH ELF kernels from raw 32-bit code, for tests that need a
guest doing one precise thing (an emulation failure, a port write)."""
import struct

XEN_ELFNOTE_PHYS32_ENTRY = 18


def pvh_elf(code: bytes, load_addr=0x100000) -> bytes:
    """An ELF32 with one PT_LOAD segment holding `code` at `load_addr` (the
    entry point) and a PT_NOTE with the Xen PHYS32_ENTRY note."""
    name = b"Xen\0"
    desc = struct.pack("<I", load_addr)
    note = struct.pack("<III", len(name), len(desc), XEN_ELFNOTE_PHYS32_ENTRY) + name + desc
    ehsize, phentsize, phnum = 52, 32, 2
    note_off = ehsize + phentsize * phnum
    code_off = (note_off + len(note) + 15) & ~15
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)
    eh = ident + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, load_addr, ehsize, 0, 0, ehsize,
                             phentsize, phnum, 40, 0, 0)
    ph_load = struct.pack("<IIIIIIII", 1, code_off, load_addr, load_addr, len(code), len(code), 7, 16)
    ph_note = struct.pack("<IIIIIIII", 4, note_off, 0, 0, len(note), len(note), 4, 4)
    img = eh + ph_load + ph_note + note
    img += bytes(code_off - len(img)) + code
    return img


def out_loop(port: int, value: int) -> bytes:
    """mov dx, port; mov ax, value; out dx, ax; jmp $"""
    return (b"\x66\xba" + struct.pack("<H", port) + b"\x66\xb8" + struct.pack("<H", value)
            + b"\x66\xef" + b"\xeb\xfe")


def jump_to(addr: int) -> bytes:
    """mov eax, addr; jmp eax — fetching code from an address that is not RAM
    cannot be emulated by KVM: a KVM internal error (emulation failure)."""
    return b"\xb8" + struct.pack("<I", addr) + b"\xff\xe0"
