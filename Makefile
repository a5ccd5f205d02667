# godwit — top-level build. Everything lands in build/ (out of tree).
#   make            build programs, the test guest and the unit tests
#   make check      run every test (unit + integration), ends "N passed, N failed"
#   make asan       build and test with AddressSanitizer + UBSan (build-asan/)
#   make fuzz       build libFuzzer targets (clang) and run each for a bounded time
#   make deps       install missing Debian packages (apt-get)
#   V=1             show full commands

BUILD   ?= build
CC      ?= gcc
SANITIZE ?=
OPT     ?= -O2

ifeq ($(V),1)
Q :=
else
Q := @
endif

CFLAGS_COMMON := -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -Wno-unused-parameter \
	-Wno-missing-field-initializers -Wshadow -Wformat=2 -Wno-format-nonliteral -Wno-format-truncation \
	-D_GNU_SOURCE -fno-strict-aliasing -pthread -MMD -MP $(SANITIZE)
CFLAGS  += $(CFLAGS_COMMON) -Isrc -DGODWIT_VERSION=\"0.1.0\"
LDLIBS  += -lgnutls -ljson-c -lzstd -llz4 -llzma -lz -lxxhash -lpthread -lm
LDFLAGS += $(SANITIZE) -pthread

# Library: every src/ file except the programs' main.c files.
LIB_SRCS  := $(filter-out %/main.c,$(wildcard src/*/*.c))
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/obj/%.o)
LIB       := $(BUILD)/libgodwit.a

# Programs: src/<dir>/main.c -> build/<name>
PROGS := $(BUILD)/godwit-vmm $(BUILD)/godwit-stream $(BUILD)/godwitd $(BUILD)/godwit $(BUILD)/godwit-memcheck
PROG_MAIN_godwit-vmm    := src/vmm/main.c
PROG_MAIN_godwit-stream := src/tools/main.c
PROG_MAIN_godwitd       := src/daemon/main.c
PROG_MAIN_godwit        := src/cli/main.c
PROG_MAIN_godwit-memcheck := src/memcheck/main.c
PROGS := $(foreach p,$(PROGS),$(if $(wildcard $(PROG_MAIN_$(notdir $(p)))),$(p)))

UNIT_SRCS  := $(wildcard tests/unit/test_*.c)
UNIT_BINS  := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/unit/%)

GUEST_ELF  := $(BUILD)/guest/test-guest.elf

BENCH_SRCS := $(wildcard bench/*_bench.c)
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)


all: $(GUEST_ELF) $(PROGS) $(UNIT_BINS) $(BENCH_BINS)

# ---- the test guest (freestanding) -----------------------------------------
include guest/guest.mk

# ---- library, programs ------------------------------------------------------
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

# The stream checksum's AVX2 build: stream_hash() calls it only on CPUs with AVX2.
$(BUILD)/obj/src/migration/stream_hash_avx2.o: CFLAGS += -mavx2

# The VMM embeds the test guest ELF.
$(BUILD)/obj/src/vmm/test_guest_blob.o: src/vmm/test_guest_blob.S $(GUEST_ELF)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  AS      $<")
	$(Q)$(CC) -c -DGUEST_ELF_PATH='"$(GUEST_ELF)"' $< -o $@

$(LIB): $(LIB_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/godwit-vmm: $(BUILD)/obj/src/vmm/main.o $(BUILD)/obj/src/vmm/test_guest_blob.o $(LIB)
$(BUILD)/godwit-stream: $(BUILD)/obj/src/tools/main.o $(LIB)
$(BUILD)/godwitd: $(BUILD)/obj/src/daemon/main.o $(LIB)
$(BUILD)/godwit: $(BUILD)/obj/src/cli/main.o $(LIB)
$(BUILD)/godwit-memcheck: $(BUILD)/obj/src/memcheck/main.o $(LIB)

$(PROGS):
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(EXTRA_LDLIBS_$(notdir $@))

# ---- unit tests (cmocka) ----------------------------------------------------
# tests/lib/*.c are helpers some tests and benchmarks link (listed per test).
$(BUILD)/tests/unit/%: tests/unit/%.c $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  TEST    $@")
	$(Q)$(CC) $(CFLAGS) -Itests/lib $(LDFLAGS) -o $@ $(filter %.c,$^) $(LIB) -lcmocka $(LDLIBS)

$(BUILD)/tests/unit/test_postcopy_engine $(BUILD)/tests/unit/test_precopy_engine: tests/lib/engine_vm.c tests/lib/test_netns.c tests/lib/test_relay.c

# ---- benchmarks (C ones; the Python ones drive the programs) -------------------

$(BUILD)/bench/%: bench/%.c tests/lib/engine_vm.c $(LIB)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  BENCH   $@")
	$(Q)$(CC) $(CFLAGS) -Itests/lib $(LDFLAGS) -o $@ $(filter %.c,$^) $(LIB) $(LDLIBS)

bench: $(BENCH_BINS)

# ---- running tests ------------------------------------------------------------
check: all
	$(Q)tests/run --build $(BUILD) --asan --fuzz

# The whole tree again with AddressSanitizer + UBSan (unit tests run under it).
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
asan-build:
	$(Q)$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 SANITIZE="$(ASAN_FLAGS)" all

asan: asan-build
	$(Q)tests/run --build build-asan --unit-only

fuzz:
	$(Q)$(MAKE) --no-print-directory -f tests/fuzz/fuzz.mk BUILD=build-fuzz run

deps:
	$(Q)mk/deps.sh

clean:
	rm -rf $(BUILD) build-asan build-fuzz

.PHONY: all check asan asan-build fuzz deps clean bench
.DELETE_ON_ERROR:

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
