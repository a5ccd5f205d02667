/* ACPI table layouts (ACPI 6.4 spec, chapter 5.2) that godwit-vmm builds:
 * RSDP, the common table header, FACS, FADT, MADT and its entries. Wire
 * structs only, little-endian, packed; each with a size assert. See
 * docs/devices.md "ACPI tables" for what godwit puts in them. */
#ifndef GW_DEVICES_ACPI_ABI_H
#define GW_DEVICES_ACPI_ABI_H

#include <stdint.h>

#define ACPI_RSDP_SIG     "RSD PTR "
#define ACPI_RSDP_V1_LEN  20          /* bytes covered by the first checksum */

struct acpi_rsdp {
    char signature[8];
    uint8_t checksum;                 /* first 20 bytes sum to 0 */
    char oem_id[6];
    uint8_t revision;                 /* 2: ACPI 2.0+, XSDT valid */
    uint32_t rsdt_address;
    uint32_t length;                  /* of this structure: 36 */
    uint64_t xsdt_address;
    uint8_t extended_checksum;        /* all 36 bytes sum to 0 */
    uint8_t reserved[3];
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_rsdp) == 36, "acpi_rsdp");

struct acpi_sdt_header {
    char signature[4];
    uint32_t length;                  /* whole table, header included */
    uint8_t revision;
    uint8_t checksum;                 /* whole table sums to 0 */
    char oem_id[6];
    char oem_table_id[8];
    uint32_t oem_revision;
    char creator_id[4];
    uint32_t creator_revision;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_sdt_header) == 36, "acpi_sdt_header");

/* Generic Address Structure. */
struct acpi_gas {
    uint8_t space_id;                 /* 1: system I/O */
    uint8_t bit_width;
    uint8_t bit_offset;
    uint8_t access_size;              /* 1 byte, 2 word, 3 dword, 4 qword */
    uint64_t address;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_gas) == 12, "acpi_gas");

#define ACPI_GAS_SYSTEM_IO 1
#define ACPI_GAS_ACCESS_WORD 2

/* Firmware ACPI Control Structure: no checksum, 64-byte aligned. */
struct acpi_facs {
    char signature[4];                /* "FACS" */
    uint32_t length;                  /* 64 */
    uint32_t hardware_signature;
    uint32_t firmware_waking_vector;
    uint32_t global_lock;
    uint32_t flags;
    uint64_t x_firmware_waking_vector;
    uint8_t version;                  /* 2 */
    uint8_t reserved[3];
    uint32_t ospm_flags;
    uint8_t reserved2[24];
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_facs) == 64, "acpi_facs");

/* Fixed ACPI Description Table, revision 6 (276 bytes). */
struct acpi_fadt {
    struct acpi_sdt_header h;         /* "FACP" */
    uint32_t firmware_ctrl;           /* 36: FACS */
    uint32_t dsdt;                    /* 40 */
    uint8_t reserved0;                /* 44 */
    uint8_t preferred_pm_profile;     /* 45 */
    uint16_t sci_int;                 /* 46 */
    uint32_t smi_cmd;                 /* 48: 0 = always in ACPI mode */
    uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt; /* 52 */
    uint32_t pm1a_evt_blk, pm1b_evt_blk;  /* 56, 60 */
    uint32_t pm1a_cnt_blk, pm1b_cnt_blk;  /* 64, 68 */
    uint32_t pm2_cnt_blk, pm_tmr_blk;     /* 72, 76 */
    uint32_t gpe0_blk, gpe1_blk;          /* 80, 84 */
    uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len; /* 88 */
    uint8_t gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;    /* 92 */
    uint16_t p_lvl2_lat, p_lvl3_lat;      /* 96 */
    uint16_t flush_size, flush_stride;    /* 100 */
    uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century; /* 104 */
    uint16_t iapc_boot_arch;              /* 109 */
    uint8_t reserved1;                    /* 111 */
    uint32_t flags;                       /* 112 */
    struct acpi_gas reset_reg;            /* 116 */
    uint8_t reset_value;                  /* 128 */
    uint16_t arm_boot_arch;               /* 129 */
    uint8_t minor_version;                /* 131 */
    uint64_t x_firmware_ctrl;             /* 132 */
    uint64_t x_dsdt;                      /* 140 */
    struct acpi_gas x_pm1a_evt_blk, x_pm1b_evt_blk;  /* 148, 160 */
    struct acpi_gas x_pm1a_cnt_blk, x_pm1b_cnt_blk;  /* 172, 184 */
    struct acpi_gas x_pm2_cnt_blk, x_pm_tmr_blk;     /* 196, 208 */
    struct acpi_gas x_gpe0_blk, x_gpe1_blk;          /* 220, 232 */
    struct acpi_gas sleep_control_reg, sleep_status_reg; /* 244, 256 */
    uint64_t hypervisor_vendor_id;        /* 268 */
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_fadt) == 276, "acpi_fadt");

/* FADT flags */
#define ACPI_FADT_WBINVD      (1u << 0)
#define ACPI_FADT_PROC_C1     (1u << 2)
#define ACPI_FADT_PWR_BUTTON  (1u << 4)   /* set: no fixed-feature power button */
#define ACPI_FADT_SLP_BUTTON  (1u << 5)   /* set: no fixed-feature sleep button */
#define ACPI_FADT_HW_REDUCED  (1u << 20)
/* IA-PC boot architecture flags */
#define ACPI_IAPC_LEGACY_DEVICES (1u << 0)
#define ACPI_IAPC_8042           (1u << 1)

struct acpi_madt {
    struct acpi_sdt_header h;         /* "APIC" */
    uint32_t lapic_address;
    uint32_t flags;                   /* bit 0: PC-AT dual 8259 present */
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_madt) == 44, "acpi_madt");

#define ACPI_MADT_PCAT_COMPAT 1u

enum {
    ACPI_MADT_LAPIC = 0,
    ACPI_MADT_IOAPIC = 1,
    ACPI_MADT_ISO = 2,                /* interrupt source override */
    ACPI_MADT_LAPIC_NMI = 4,
};

struct acpi_madt_lapic {
    uint8_t type, length;             /* 0, 8 */
    uint8_t processor_uid;
    uint8_t apic_id;
    uint32_t flags;                   /* bit 0: enabled */
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_madt_lapic) == 8, "acpi_madt_lapic");

struct acpi_madt_ioapic {
    uint8_t type, length;             /* 1, 12 */
    uint8_t ioapic_id, reserved;
    uint32_t address;
    uint32_t gsi_base;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_madt_ioapic) == 12, "acpi_madt_ioapic");

struct acpi_madt_iso {
    uint8_t type, length;             /* 2, 10 */
    uint8_t bus;                      /* 0: ISA */
    uint8_t source;                   /* ISA IRQ */
    uint32_t gsi;
    uint16_t flags;                   /* polarity bits 0-1, trigger bits 2-3 */
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_madt_iso) == 10, "acpi_madt_iso");

#define ACPI_MPS_ACTIVE_HIGH 0x1
#define ACPI_MPS_LEVEL       0xc

struct acpi_madt_lapic_nmi {
    uint8_t type, length;             /* 4, 6 */
    uint8_t processor_uid;            /* 0xff: all */
    uint16_t flags;
    uint8_t lint;
} __attribute__((packed));
_Static_assert(sizeof(struct acpi_madt_lapic_nmi) == 6, "acpi_madt_lapic_nmi");

#endif
