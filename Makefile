# lsqd build. Outputs under build/ (build-san/ with SANITIZE=...).
#   make            build the engine, lsq and lsqd
#   make test       build and run every test tier (unit, api, e2e, soak, ...)
#   make soak       300 tiny jobs through lsqd under cancels and kills
#   make test-container  build the Docker image and test it (docs/deploy.md)
#   make run        build and start lsqd with its dashboard
#   make bench      benchmarks side by side with their peers
#   make SANITIZE=address,undefined test
#   make fuzz FUZZ_S=60  libFuzzer targets (fuzz/) under ASan+UBSan, N s each
#   make test-faults     allocation-failure sweep of the readers (build-san/)

CC      ?= cc
SANITIZE ?=
BUILD   := build$(if $(SANITIZE),-san)
DEPS_STAMP := $(BUILD)/.deps-ok

# Datasets: libarchive (tar, tar.gz, zip), libpng and libjpeg(-turbo). Debian's
# libjpeg62-turbo-dev ships libjpeg.pc; elsewhere plain -ljpeg is the fallback.
# Deferred (=) so that it is asked after install-deps.sh ran.
JPEG_PKG     = $(shell $(PKG_CONFIG) --exists libjpeg 2>/dev/null && echo libjpeg)
# Data-parallel training (engine/train/dist.c, the one file that includes
# mpi.h) links Open MPI through its pkg-config file (libopenmpi-dev); a
# process not started by mpirun never initialises it.
ENGINE_PKGS  = jansson zlib openblas libprotobuf-c libarchive libpng ompi-c $(JPEG_PKG)
# oneDNN (libdnnl-dev, no pkg-config file): conv2d's primitives where they
# beat the engine's own kernels (engine/nn/dnnl_conv.c). `make DNNL=0`
# builds without it; then conv2d keeps its own kernels everywhere.
DNNL        ?= auto
DNNL_ON      = $(if $(filter 0,$(DNNL)),,$(shell test -f /usr/include/dnnl.h && echo 1))
DNNL_CPPFLAGS = $(if $(DNNL_ON),-DLSQ_HAVE_DNNL)
# libcrypto (libssl-dev): HMAC-SHA256 of the webhook bodies.
SERVER_PKGS := libmicrohttpd sqlite3 libcurl libcrypto
PKG_CONFIG  ?= pkg-config

WARN    := -std=c11 -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
           -Wmissing-prototypes -Werror
OPT     ?= -O2 -g
# x86-64-v3 (AVX2, FMA: 2013 and later). `make ARCH=` builds for any x86-64;
# the integer kernels pick AVX2 / AVX-512 VNNI at run time either way.
ARCH    ?= $(if $(filter x86_64,$(shell uname -m)),-march=x86-64-v3)
# Files built a second time for x86-64-v4 with 512-bit vectors (engine/core/
# isa.h); lsq picks the path at start (LSQ_ISA). Only where 512 bits paid on
# the AVX-512 machine: the quantizer (with the integer engine's float-to-codes
# step, and its work on oneDNN's channel blocks), the integer engine's
# epilogue, the training forward's product on codes, and the batch norm's
# gradient into oneDNN's channel blocks (16x16 transposes). Batch norm
# itself, the elementwise layers, the optimizer and pooling ran as fast or
# slower (docs/results.md, "AVX-512").
ISA_SRC  := engine/quant/quant.c engine/deploy/epilogue.c engine/nn/dconv_codes.c \
            engine/nn/bnblock.c
ISA_WIDE := $(if $(filter x86_64,$(shell uname -m)),-march=x86-64-v4 -mprefer-vector-width=512)
SANFLAGS := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all)
CPPFLAGS += -D_GNU_SOURCE -Iengine -MMD -MP
CFLAGS  += $(WARN) $(OPT) $(ARCH) -fopenmp $(SANFLAGS) $(if $(ISA_WIDE),-DLSQ_ISA_DISPATCH=1)
LDFLAGS += -fopenmp $(SANFLAGS)

pkgcflags = $(shell $(PKG_CONFIG) --cflags $(1) 2>/dev/null)
pkglibs   = $(shell $(PKG_CONFIG) --libs $(1) 2>/dev/null)

# Every folder is built from a wildcard: a new file needs no Makefile line.
# engine/ is one folder per subsystem (engine/README.md); its include order is
# checked by scripts/check-layout.sh.
ENGINE_SRC := $(sort $(wildcard engine/*/*.c))
SERVER_SRC := $(sort $(wildcard server/*.c))
CLI_SRC    := $(sort $(wildcard cli/*.c))
UNIT_SRC   := $(sort $(wildcard tests/unit/*.c tests/unit/*/*.c))
API_SRC    := $(sort $(wildcard tests/api/*.c))
SLURM_SRC  := $(sort $(wildcard tests/slurm/*.c))
BENCH_SRC  := $(sort $(wildcard bench/*.c))

# Generated at build time, never committed: the migrations and the OpenAPI
# document embedded into lsqd, and the ONNX protobuf code.
GEN_DIR      := $(BUILD)/gen
EMBED_C      := $(GEN_DIR)/embedded.c
EMBED_INPUTS := $(sort $(wildcard schema/[0-9][0-9][0-9]_*.sql)) schema/openapi.json

# ONNX's schema as Debian ships it (libonnx-dev), compiled by protoc-c into C
# structs with pack/unpack: $(GEN_DIR)/onnx/onnx.pb-c.{c,h}, included as
# "onnx/onnx.pb-c.h" and built into the engine library as its lowest folder,
# onnx/ (engine/README.md).
ONNX_PROTO_ROOT ?= /usr/include
PROTOC_C        ?= protoc-c
ONNX_PROTO := $(ONNX_PROTO_ROOT)/onnx/onnx.proto
ONNX_PB_C  := $(GEN_DIR)/onnx/onnx.pb-c.c
ONNX_PB_H  := $(GEN_DIR)/onnx/onnx.pb-c.h
ONNX_PB_O  := $(BUILD)/obj/engine/onnx/onnx.pb-c.o

ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/obj/%.o) $(ONNX_PB_O) \
              $(if $(ISA_WIDE),$(ISA_SRC:%.c=$(BUILD)/obj/%.avx512.o))
SERVER_OBJ := $(SERVER_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/embedded.o
CLI_OBJ    := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_OBJ   := $(UNIT_SRC:%.c=$(BUILD)/obj/%.o)
API_OBJ    := $(API_SRC:%.c=$(BUILD)/obj/%.o)
SLURM_OBJ  := $(SLURM_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/tests/api/harness.o

ENGINE_LIB := $(BUILD)/libengine.a
LSQ        := $(BUILD)/lsq
LSQD       := $(BUILD)/lsqd
UNIT_BIN   := $(BUILD)/tests/unit
API_BIN    := $(BUILD)/tests/api
SLURM_BIN  := $(BUILD)/tests/slurm

ENGINE_LIBS = $(call pkglibs,$(ENGINE_PKGS)) $(if $(JPEG_PKG),,-ljpeg) $(if $(DNNL_ON),-ldnnl) -lm
SERVER_LIBS = $(call pkglibs,$(SERVER_PKGS))

BINS := $(LSQ) $(if $(SERVER_SRC),$(LSQD))
BENCH_BINS := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: fuzz test-fuzz test-faults
.PHONY: soak test-soak
.PHONY: all deps test test-layout test-unit test-api test-e2e test-slurm test-slurm-if-up \
        test-container run bench clean fixtures
all: $(BINS)

# Install missing Debian packages once per build tree (scripts/install-deps.sh
# is itself a no-op when everything is present).
$(DEPS_STAMP): scripts/install-deps.sh
	@scripts/install-deps.sh build
	@mkdir -p $(@D) && touch $@
deps: $(DEPS_STAMP)

# One protoc-c run writes both files. Every object that may include the
# header waits for it (order-only); -MMD then records the real dependency.
$(ONNX_PB_C) $(ONNX_PB_H) &: $(ONNX_PROTO) | $(DEPS_STAMP)
	@mkdir -p $(GEN_DIR)
	$(PROTOC_C) --proto_path=$(ONNX_PROTO_ROOT) --c_out=$(GEN_DIR) $(ONNX_PROTO)

$(ONNX_PB_O): $(ONNX_PB_C) $(ONNX_PB_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -I$(GEN_DIR) $(CFLAGS) $(call pkgcflags,libprotobuf-c) -c $< -o $@

$(BUILD)/obj/engine/%.o: engine/%.c | $(DEPS_STAMP) $(ONNX_PB_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DNNL_CPPFLAGS) -I$(GEN_DIR) $(CFLAGS) $(call pkgcflags,$(ENGINE_PKGS)) -c $< -o $@

$(BUILD)/obj/engine/%.avx512.o: engine/%.c | $(DEPS_STAMP) $(ONNX_PB_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -I$(GEN_DIR) $(filter-out $(ARCH),$(CFLAGS)) $(ISA_WIDE) -DLSQ_ISA_VARIANT=1 \
	    $(call pkgcflags,$(ENGINE_PKGS)) -c $< -o $@

$(EMBED_C): scripts/embed.sh $(EMBED_INPUTS) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	scripts/embed.sh schema $@

$(BUILD)/obj/gen/embedded.o: $(EMBED_C)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Iserver $(CFLAGS) -c $< -o $@

$(BUILD)/obj/server/%.o: server/%.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Iserver $(CFLAGS) $(call pkgcflags,$(ENGINE_PKGS) $(SERVER_PKGS)) -c $< -o $@

$(BUILD)/obj/cli/%.o: cli/%.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(call pkgcflags,$(ENGINE_PKGS) libcurl) -c $< -o $@

$(BUILD)/obj/tests/%.o: tests/%.c | $(DEPS_STAMP) $(EMBED_C) $(ONNX_PB_H)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) -Iserver -Itests -I$(GEN_DIR) $(CFLAGS) $(call pkgcflags,$(ENGINE_PKGS) $(SERVER_PKGS) criterion) -c $< -o $@

$(BUILD)/obj/bench/%.o: bench/%.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DNNL_CPPFLAGS) $(CFLAGS) $(call pkgcflags,$(ENGINE_PKGS)) -c $< -o $@

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(ENGINE_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(ENGINE_LIB) $(ENGINE_LIBS)

$(ENGINE_LIB): $(ENGINE_OBJ)
	@mkdir -p $(@D)
	rm -f $@ && $(AR) qcs $@ $^

$(LSQ): $(CLI_OBJ) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(ENGINE_LIB) $(ENGINE_LIBS) $(call pkglibs,libcurl)

$(LSQD): $(SERVER_OBJ) $(ENGINE_LIB)
	$(CC) $(LDFLAGS) -o $@ $(SERVER_OBJ) $(ENGINE_LIB) $(SERVER_LIBS) $(ENGINE_LIBS)

$(UNIT_BIN): $(UNIT_OBJ) $(ENGINE_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(UNIT_OBJ) $(ENGINE_LIB) $(call pkglibs,criterion) $(ENGINE_LIBS)

$(API_BIN): $(API_OBJ) $(ENGINE_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(API_OBJ) $(ENGINE_LIB) $(call pkglibs,criterion libcurl) $(SERVER_LIBS) $(ENGINE_LIBS)

# The Slurm tier reuses the API tests' harness (a real lsqd, libcurl, SSE).
$(SLURM_BIN): $(SLURM_OBJ)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(SLURM_OBJ) $(call pkglibs,criterion libcurl) $(SERVER_LIBS) $(call pkglibs,jansson)

# Every tier; each fails the run on any failure.
test: test-layout test-unit $(if $(API_SRC),test-api) $(if $(wildcard tests/e2e/*.mjs),test-e2e) \
      test-slurm test-fuzz test-soak test-faults

# Under the sanitizers, LeakSanitizer ignores criterion's own allocations
# (the runner leaks a few bytes of its own at exit).
export LSAN_OPTIONS := suppressions=$(abspath tests/lsan.supp)

# The dependency rules of the layout (engine/README.md): engine subsystems
# include and call only their own folder and lower ones; no circle between
# the files of engine/, server/ or cli/ (read from the built objects).
test-layout: $(BINS)
	@scripts/install-deps.sh test
	scripts/check-layout.py $(BUILD)

test-unit: $(UNIT_BIN) $(BINS)
	@scripts/install-deps.sh test
	@scripts/setup-onnxruntime.sh
	/usr/bin/python3 tests/bench/test_results_files.py
	LSQ_BIN=$(abspath $(LSQ)) LSQ_BUILD=$(abspath $(BUILD)) $(UNIT_BIN) --jobs 2

test-api: $(API_BIN) $(BINS)
	LSQ_BIN=$(abspath $(LSQ)) LSQD_BIN=$(abspath $(LSQD)) LSQ_BUILD=$(abspath $(BUILD)) $(API_BIN) --jobs 1

# lsqd --executor slurm against a one-node Slurm on this machine
# (scripts/slurm-up.sh), a tier of `make test`; it fails when Slurm does not
# come up within 30 s. `make test-slurm-if-up` skips it then instead.
test-slurm: $(SLURM_BIN) $(BINS)
	@scripts/install-deps.sh slurm
	tests/slurm/run.sh $(abspath $(BUILD))

test-slurm-if-up: $(SLURM_BIN) $(BINS)
	tests/slurm/run.sh $(abspath $(BUILD)) --if-up

# Soak (docs/reliability.md): tiny jobs through a real lsqd under random
# cancels, worker SIGKILLs and lsqd SIGKILLs with restarts, then every job's
# end state, event numbering, leftover workers, lsqd's descriptors and RSS.
# `make soak` is the full run (300 jobs, 3 lsqd kills, minutes); `make
# test-soak`, a tier of `make test`, a short one. SOAK_SEED picks the run.
SOAK_SEED ?= 1
soak: $(BINS)
	/usr/bin/python3 tests/soak/soak.py --lsqd $(LSQD) --lsq $(LSQ) --jobs 300 \
	    --lsqd-kills 3 --seed $(SOAK_SEED)

test-soak: $(BINS)
	/usr/bin/python3 tests/soak/soak.py --lsqd $(LSQD) --lsq $(LSQ) --jobs 60 \
	    --lsqd-kills 1 --seed $(SOAK_SEED) --timeout 600

test-e2e: $(BINS)
	@scripts/install-deps.sh test
	scripts/e2e.sh $(abspath $(LSQD)) $(abspath $(BUILD))

# Not part of `make test`: builds the image from the Dockerfile (debootstrap,
# apt and a full build inside it) and proves it with a real daemon and volume
# (docs/deploy.md, "Testing the image").
test-container:
	tests/container/run.sh

run: $(BINS)
	scripts/run.sh $(abspath $(BUILD))

bench: $(BINS) $(BENCH_BINS)
	@scripts/install-deps.sh bench
	bench/run.sh $(abspath $(BUILD))

# Regenerate the PyTorch fixtures (not run by CI; the outputs are committed).
# The ONNX ones store onnxruntime's logits, so they need onnxruntime-node.
fixtures:
	/usr/bin/python3 tests/fixtures/make_fixtures.py tests/fixtures
	@scripts/setup-onnxruntime.sh
	/usr/bin/python3 tests/fixtures/make_onnx_fixtures.py tests/fixtures/onnx

# Fuzzing (docs/reliability.md): every fuzz/*.c is one libFuzzer target that
# feeds its bytes to one of the engine's readers. The engine is compiled
# again with clang, ASan and UBSan into build-fuzz/ (not the gcc build);
# `make fuzz FUZZ_S=N` runs each target N seconds on its seed corpus
# (fuzz/corpus/<target>/), `make test-fuzz` replays fuzz/regressions/ and
# runs each FUZZ_TEST_S seconds.
FUZZ_CC      ?= clang
FUZZ_S       ?= 60
FUZZ_TEST_S  ?= 10
FUZZ_BUILD   := build-fuzz
FUZZ_SRC     := $(sort $(wildcard fuzz/*.c))
FUZZ_BINS    := $(FUZZ_SRC:fuzz/%.c=$(FUZZ_BUILD)/fuzz/%)
FUZZ_GEN     := $(FUZZ_BUILD)/gen
FUZZ_SANF    := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
# -Wno-pass-failed: "omp simd" loops that the sanitizers keep from vectorizing.
FUZZ_CFLAGS  := $(WARN) -Wno-pass-failed -g -O1 $(ARCH) -fopenmp $(FUZZ_SANF) -fsanitize=fuzzer-no-link
FUZZ_ENG_OBJ := $(ENGINE_SRC:%.c=$(FUZZ_BUILD)/obj/%.o) $(FUZZ_BUILD)/obj/engine/onnx/onnx.pb-c.o
FUZZ_DEPS    := $(FUZZ_BUILD)/.deps-ok

$(FUZZ_DEPS): scripts/install-deps.sh
	@scripts/install-deps.sh fuzz
	@mkdir -p $(@D) && touch $@

$(FUZZ_GEN)/onnx/onnx.pb-c.c $(FUZZ_GEN)/onnx/onnx.pb-c.h &: $(ONNX_PROTO) | $(FUZZ_DEPS)
	@mkdir -p $(FUZZ_GEN)
	$(PROTOC_C) --proto_path=$(ONNX_PROTO_ROOT) --c_out=$(FUZZ_GEN) $(ONNX_PROTO)

$(FUZZ_BUILD)/obj/engine/onnx/onnx.pb-c.o: $(FUZZ_GEN)/onnx/onnx.pb-c.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) -I$(FUZZ_GEN) $(FUZZ_CFLAGS) $(call pkgcflags,libprotobuf-c) -c $< -o $@

$(FUZZ_BUILD)/obj/%.o: %.c | $(FUZZ_DEPS) $(FUZZ_GEN)/onnx/onnx.pb-c.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) -I$(FUZZ_GEN) $(FUZZ_CFLAGS) $(call pkgcflags,$(ENGINE_PKGS)) -c $< -o $@

$(FUZZ_BUILD)/libengine.a: $(FUZZ_ENG_OBJ)
	rm -f $@ && $(AR) qcs $@ $^

$(FUZZ_BUILD)/fuzz/%: $(FUZZ_BUILD)/obj/fuzz/%.o $(FUZZ_BUILD)/libengine.a
	@mkdir -p $(@D)
	$(FUZZ_CC) -fopenmp $(FUZZ_SANF) -fsanitize=fuzzer -o $@ $< $(FUZZ_BUILD)/libengine.a \
	    $(ENGINE_LIBS)

# The HTTP target (fuzz/http.c) runs lsqd's own daemon, routes and store in
# its process: it links lsqd's objects (all but main.c) compiled the same
# way. fork is wrapped (fuzz/http.c's __wrap_fork fails every call) so that
# no worker or importer process can start from it.
FUZZ_SRV_OBJ := $(patsubst %.c,$(FUZZ_BUILD)/obj/%.o,$(filter-out server/main.c,$(SERVER_SRC))) \
                $(FUZZ_BUILD)/obj/gen/embedded.o

$(FUZZ_BUILD)/obj/server/%.o: server/%.c | $(FUZZ_DEPS)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) -Iserver $(FUZZ_CFLAGS) $(call pkgcflags,$(ENGINE_PKGS) $(SERVER_PKGS)) -c $< -o $@

$(FUZZ_GEN)/embedded.c: scripts/embed.sh $(EMBED_INPUTS) | $(FUZZ_DEPS)
	@mkdir -p $(@D)
	scripts/embed.sh schema $@

$(FUZZ_BUILD)/obj/gen/embedded.o: $(FUZZ_GEN)/embedded.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) -Iserver $(FUZZ_CFLAGS) -c $< -o $@

$(FUZZ_BUILD)/obj/fuzz/http.o: fuzz/http.c | $(FUZZ_DEPS) $(FUZZ_GEN)/onnx/onnx.pb-c.h
	@mkdir -p $(@D)
	$(FUZZ_CC) $(CPPFLAGS) -Iserver $(FUZZ_CFLAGS) $(call pkgcflags,$(ENGINE_PKGS) $(SERVER_PKGS)) -c $< -o $@

$(FUZZ_BUILD)/fuzz/http: $(FUZZ_BUILD)/obj/fuzz/http.o $(FUZZ_SRV_OBJ) $(FUZZ_BUILD)/libengine.a
	@mkdir -p $(@D)
	$(FUZZ_CC) -fopenmp $(FUZZ_SANF) -fsanitize=fuzzer -Wl,--wrap=fork -o $@ $< $(FUZZ_SRV_OBJ) \
	    $(FUZZ_BUILD)/libengine.a $(SERVER_LIBS) $(ENGINE_LIBS)

fuzz: $(FUZZ_BINS)
	scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_S)

test-fuzz: $(FUZZ_BINS)
	scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_TEST_S) --replay

# Allocation failures (docs/reliability.md): tests/faults/faults.c, linked
# with the engine built under ASan+UBSan (build-san/, as SANITIZE=... does)
# and --wrap on every allocator the engine calls, makes the Nth allocation
# of each reader fail for N = 1, 2 ... on the fuzz seeds (fuzz/corpus/) and
# fails on a crash, a leak or an error without a message. A tier of `make
# test` without the zoo builds (about 10 s); `make test-faults FAULTS_ARGS=`
# sweeps the zoo too (resnet20 alone takes many minutes).
FAULTS_ARGS ?= -x zoo
FAULTS_SAN  := address,undefined
FAULTS_WRAP := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=free,--wrap=strdup \
               -Wl,--wrap=strndup,--wrap=aligned_alloc,--wrap=json_loadb,--wrap=json_loads

$(BUILD)/obj/tests/faults/%.o: CPPFLAGS += -Ifuzz

$(BUILD)/tests/faults: $(BUILD)/obj/tests/faults/faults.o $(ENGINE_LIB)
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) $(FAULTS_WRAP) -o $@ $< $(ENGINE_LIB) $(ENGINE_LIBS)

test-faults:
	$(MAKE) SANITIZE=$(FAULTS_SAN) build-san/tests/faults
	OMP_NUM_THREADS=2 build-san/tests/faults fuzz/corpus $(FAULTS_ARGS)

clean:
	rm -rf build build-san build-fuzz

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
-include $(if $(filter fuzz test-fuzz $(FUZZ_BUILD)/%,$(MAKECMDGOALS)),$(shell find $(FUZZ_BUILD)/obj -name '*.d' 2>/dev/null))
