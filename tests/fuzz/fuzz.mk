# libFuzzer targets (clang). Each tests/fuzz/fuzz_NAME.c is linked with the
# library sources and run for FUZZ_SECONDS (default 30) against a copy of its
# corpus in tests/fuzz/corpus/NAME/; a crash fails the run.
#   make -f tests/fuzz/fuzz.mk BUILD=build-fuzz run [FUZZ_SECONDS=N]
# Library objects are compiled with -fsanitize=fuzzer-no-link (coverage,
# no main); FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION lets the stream reader
# accept bad checksums so that mutations reach the record decoders.
BUILD        ?= build-fuzz
FUZZ_SECONDS ?= 30
CLANG        ?= clang
FUZZ_CFLAGS  := -std=gnu11 -g -O1 -Isrc -D_GNU_SOURCE -DGODWIT_VERSION=\"fuzz\" -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_LIBS    := -ljson-c -lzstd -llz4 -llzma -lz -lxxhash -lpthread -lm
FUZZ_LIB_SRCS := $(filter-out %/main.c,$(wildcard src/*/*.c))
FUZZ_LIB_OBJS := $(FUZZ_LIB_SRCS:%.c=$(BUILD)/obj/%.o)
FUZZ_SRCS    := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_HDRS    := $(wildcard tests/fuzz/*.h)
FUZZ_BINS    := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/%)

all: $(FUZZ_BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	@$(CLANG) $(filter-out -fsanitize=fuzzer%,$(FUZZ_CFLAGS)) -fsanitize=fuzzer-no-link,address,undefined -MMD -MP -c $< -o $@

# Objects are rebuilt when a header they include changes.
-include $(FUZZ_LIB_OBJS:.o=.d) $(FUZZ_BINS:=.d)

# As in the Makefile: the checksum's AVX2 build, called only on AVX2 CPUs.
$(BUILD)/obj/src/migration/stream_hash_avx2.o: FUZZ_CFLAGS += -mavx2

$(BUILD)/libgodwit-fuzz.a: $(FUZZ_LIB_OBJS)
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/fuzz_%: tests/fuzz/fuzz_%.c $(BUILD)/libgodwit-fuzz.a $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	@echo "  FUZZ    $@"
	@$(CLANG) $(FUZZ_CFLAGS) -MMD -MP -MF $@.d -o $@ $(filter-out %.h,$^) $(FUZZ_LIBS)

run: all
	@set -e; for bin in $(FUZZ_BINS); do \
	    name=$$(basename $$bin | sed 's/^fuzz_//'); \
	    work=$(BUILD)/corpus/$$name; rm -rf $$work; mkdir -p $$work; \
	    cp tests/fuzz/corpus/$$name/* $$work/ 2>/dev/null || true; \
	    echo "  RUN     $$bin ($(FUZZ_SECONDS) s)"; \
	    $$bin -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -print_final_stats=0 \
	        -artifact_prefix=$(BUILD)/crash-$$name- $$work > $(BUILD)/$$name.log 2>&1 || \
	        { tail -40 $(BUILD)/$$name.log; echo "fuzz_$$name found a crash"; exit 1; }; \
	    grep -E "^#[0-9]+.*DONE|Done [0-9]+ runs" $(BUILD)/$$name.log | tail -1; \
	done

.PHONY: all run
