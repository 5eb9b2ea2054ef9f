# DVV build. `make` builds the release binaries in build/; `make SAN=1` builds the same tree with
# ASan+UBSan in build-san/ (what the tests run); `make test` runs the whole suite (scripts/test.sh).
# Quiet by default, V=1 prints full commands.

.DELETE_ON_ERROR:
.DEFAULT_GOAL := all
.SUFFIXES:

CC      ?= cc
CLANG   ?= clang
SAN     ?= 0
V       ?= 0

ifeq ($(V),1)
Q :=
msg = @true
else
Q := @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

ifeq ($(SAN),1)
BUILD   ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
OPT     := -O1 -g
else
BUILD   ?= build
SANFLAGS :=
OPT     := -O2 -g
endif

# Keep intermediate objects (unit-test and tool objects, BPF objects) between builds. Not
# `.SECONDARY:` for every target: that also covers the header rules -MP writes, and a header that
# moved or was deleted then no longer forces its users to rebuild (stale objects, ASan reports).
.PRECIOUS: $(BUILD)/obj/%.o $(BUILD)/bpf/%.bpf.o $(BUILD)/gen/%

WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wno-unused-parameter -Wformat=2
CFLAGS  ?= $(OPT)
CFLAGS  += -std=gnu11 $(WARN) $(SANFLAGS) -D_GNU_SOURCE -Icommon -Iuserspace -Iclient -Iapi -I/usr/include/postgresql -I$(BUILD)/gen \
           -fstack-protector-strong -D_FORTIFY_SOURCE=2 -MMD -MP
LDFLAGS += $(SANFLAGS)

RELAY_LIBS := -lbpf -lelf -lz -lssl -lcrypto -ljwt -ljansson -lhiredis -lmicrohttpd -lpthread
AGENT_LIBS := -lssl -lcrypto -ljansson -lpthread
API_LIBS   := -lmicrohttpd -lpq -largon2 -ljansson -ljwt -lssl -lcrypto -lhiredis -lcurl -lpthread
TEST_LIBS  := -lcmocka $(RELAY_LIBS)

COMMON_SRC := $(wildcard common/*.c)
RELAY_SRC  := $(filter-out userspace/main.c,$(wildcard userspace/*.c))
AGENT_SRC  := $(filter-out client/main.c,$(wildcard client/*.c))
TOOLS_SRC  := $(wildcard tools/*.c)
API_SRC    := $(filter-out api/main.c,$(wildcard api/*.c))
MIGRATIONS := $(sort $(wildcard api/migrations/*.sql))
UNIT_API   := $(wildcard tests/unit/test_api_*.c)
UNIT_SRC   := $(filter-out $(UNIT_API),$(wildcard tests/unit/test_*.c))
FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))

COMMON_OBJ := $(call obj,$(COMMON_SRC))
RELAY_OBJ  := $(call obj,$(RELAY_SRC))
AGENT_OBJ  := $(call obj,$(AGENT_SRC))
# the API verifies agent tokens for renewal with the relays' own verifier
API_OBJ    := $(call obj,$(API_SRC) userspace/auth.c $(BUILD)/gen/migrations.c)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC) $(UNIT_API))
TOOLS_BIN  := $(patsubst tools/%.c,$(BUILD)/%,$(TOOLS_SRC))
FUZZ_BIN   := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(FUZZ_SRC))

# BPF objects (bpf/*.bpf.c) -> bpftool skeletons in $(BUILD)/gen, included by userspace/.
BPFTOOL   ?= $(shell command -v bpftool 2>/dev/null || echo /usr/sbin/bpftool)
ARCH      := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
BPF_SRC   := $(wildcard bpf/*.bpf.c)
BPF_OBJ   := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRC))
SKELS     := $(patsubst bpf/%.bpf.c,$(BUILD)/gen/%.skel.h,$(BPF_SRC))
VMLINUX   := $(BUILD)/gen/vmlinux.h

$(VMLINUX):
	$(call msg,GEN,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.h) $(VMLINUX)
	$(call msg,BPF,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror -I$(BUILD)/gen -Ibpf \
	  -c $< -o $@.tmp
	$(Q)$(BPFTOOL) gen object $@ $@.tmp && rm -f $@.tmp

# bpf/X.bpf.c -> struct X_bpf, X_bpf__open() ... (bpftool's default for X.bpf.o): the loaders' own
# names (struct xdp_guard is the guard's handle) stay free. libbpf names the object and its
# internal maps after it too (splice_b.rodata). The Makefile chooses the name: a prerequisite.
$(BUILD)/gen/%.skel.h: $(BUILD)/bpf/%.bpf.o Makefile
	$(call msg,SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $*_bpf > $@

$(RELAY_OBJ) $(call obj,userspace/main.c): | $(SKELS)
$(patsubst tests/unit/%.c,$(BUILD)/obj/tests/unit/%.o,$(UNIT_SRC)): | $(SKELS)

.PHONY: all relay api agent tools unit fuzz test static clean setup run
all: $(BUILD)/dvv-relay $(BUILD)/dvv $(BUILD)/dvv-api $(TOOLS_BIN) $(BUILD)/dvv-loadgen
relay: $(BUILD)/dvv-relay
api: $(BUILD)/dvv-api
agent: $(BUILD)/dvv
tools: $(TOOLS_BIN)
unit: $(UNIT_BIN)
fuzz: $(FUZZ_BIN)

$(BUILD)/obj/%.o: %.c
	$(call msg,CC,$<)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libdvv.a: $(COMMON_OBJ)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/librelay.a: $(RELAY_OBJ)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^
$(BUILD)/libagent.a: $(AGENT_OBJ)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/dvv-relay: $(call obj,userspace/main.c) $(BUILD)/librelay.a $(BUILD)/libdvv.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(RELAY_LIBS)

# dvv-api's schema migrations, embedded in the binary (db_migrations[], api/db.h).
$(BUILD)/gen/migrations.c: $(MIGRATIONS) scripts/embed-sql.sh
	$(call msg,GEN,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)scripts/embed-sql.sh $@ $(MIGRATIONS)

$(BUILD)/libapi.a: $(API_OBJ)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/dvv-api: $(call obj,api/main.c) $(BUILD)/libapi.a $(BUILD)/libdvv.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(API_LIBS)

$(BUILD)/dvv: $(call obj,client/main.c) $(BUILD)/libagent.a $(BUILD)/libdvv.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(AGENT_LIBS)

# The load generator (bench/loadgen.c, driven by bench/levels.sh and tests/e2e/loadgen.test.mjs;
# built with `all` so it keeps building). It speaks the agent protocol through common/ only.
$(BUILD)/dvv-loadgen: $(call obj,bench/loadgen.c) $(BUILD)/libdvv.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -ljwt -ljansson -lssl -lcrypto -lpthread

# The autoscaler talks to Redis and to an HTTPS API: libcurl besides the relay's libraries.
$(BUILD)/dvv-autoscale: $(BUILD)/obj/tools/dvv-autoscale.o $(BUILD)/libdvv.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lhiredis -lcurl -ljansson

$(BUILD)/%: $(BUILD)/obj/tools/%.o $(BUILD)/librelay.a $(BUILD)/libdvv.a
	$(call msg,LD,$@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(RELAY_LIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(BUILD)/librelay.a $(BUILD)/libagent.a $(BUILD)/libdvv.a
	$(call msg,LD,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(TEST_LIBS)

# test_token_help runs the built tool (its --help and a minted token)
$(BUILD)/tests/test_token_help: | $(BUILD)/dvv-token

# dvv-api's unit tests link the api objects (not main) and the shared code only.
$(BUILD)/tests/test_api_%: $(BUILD)/obj/tests/unit/test_api_%.o $(BUILD)/libapi.a $(BUILD)/libdvv.a
	$(call msg,LD,$@)
	$(Q)mkdir -p $(dir $@)
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ -lcmocka $(API_LIBS)

# The agent as users get it: one static binary (glibc + OpenSSL + jansson), stripped.
STATIC_FLAGS := -Os -ffunction-sections -fdata-sections
static: build/dvv-static
build/dvv-static: client/main.c $(AGENT_SRC) $(COMMON_SRC)
	$(call msg,STATIC,$@)
	$(Q)mkdir -p build
	$(Q)$(CC) -std=gnu11 $(WARN) -D_GNU_SOURCE -Icommon -Iclient $(STATIC_FLAGS) -static \
	  -Wl,--gc-sections -s -o $@ $^ -lssl -lcrypto -ljansson -lpthread
	@printf '  SIZE     %s %s bytes\n' "$@" "$$(stat -c %s $@)"

# libFuzzer targets: each tests/fuzz/fuzz_X.c links the whole shared + relay + agent code.
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -std=gnu11 -D_GNU_SOURCE -Icommon -Iuserspace -Iclient -I$(BUILD)/gen
build-fuzz/%: tests/fuzz/%.c $(COMMON_SRC) $(RELAY_SRC) $(AGENT_SRC) | $(SKELS)
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p build-fuzz
	$(Q)$(CLANG) $(FUZZ_FLAGS) -Wall -Wextra -Werror -Wno-unused-parameter -o $@ $^ $(RELAY_LIBS)

# dvv-api's targets link the api code (and the shared code) only, with its migrations.
build-fuzz/fuzz_api_%: tests/fuzz/fuzz_api_%.c $(COMMON_SRC) $(API_SRC) userspace/auth.c $(BUILD)/gen/migrations.c
	$(call msg,FUZZ,$@)
	$(Q)mkdir -p build-fuzz
	$(Q)$(CLANG) $(FUZZ_FLAGS) -Iapi -I/usr/include/postgresql -Wall -Wextra -Werror -Wno-unused-parameter -o $@ $^ $(API_LIBS)

setup:
	scripts/setup.sh

test:
	scripts/test.sh

run:
	scripts/dvv-local.sh

clean:
	rm -rf build build-san build-fuzz

-include $(shell find build build-san -name '*.d' 2>/dev/null)
