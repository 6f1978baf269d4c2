# mosboot: the two commands a new user runs first are `make demo` and `make test` (as root on
# Debian 12). Every target installs what it needs (scripts/deps.sh) and builds the node kit
# (mk/kit.mk) into a cache outside the work tree, so a fresh clone on a fresh machine just works.

SHELL := /bin/bash
CARGO ?= cargo
MOSBOOT := $(CURDIR)/target/debug/mosboot
export MOSBOOT_BIN := $(MOSBOOT)

include mk/kit.mk
include mk/package.mk

.PHONY: all deps build test unit-test e2e demo bench lint fmt clean sample fuzz

all: build

deps:
	@scripts/deps.sh build test

build:
	$(CARGO) build --workspace --all-targets

# Everything: unit tests, integration tests with real clients in namespaces, and the virtual lab
# end-to-end test (needs the kit: first run builds a kernel and busybox, ~10 minutes).
test: deps kit build
	@KIT_KERNEL=$(KIT_KERNEL) KIT_BUSYBOX=$(KIT_BUSYBOX) KIT_QEMU_DIR=$(KIT_QEMU_DIR) KIT_LKRN=$(KIT_LKRN) \
	  KIT_FLOPPY_KERNEL=$(KIT_FLOPPY_KERNEL) KIT_BUSYBOX_STAGE1=$(KIT_BUSYBOX_STAGE1) \
	  $(CARGO) test --workspace --no-fail-fast -- --test-threads=2

# Unit tests only (no root, no kit).
unit-test:
	$(CARGO) test --workspace --lib --bins

# The built-in demo: builds everything, PXE-boots three emulated PCs and floppy-boots an ISA 486;
# all four join the cluster.
demo: deps kit build
	@KIT_KERNEL=$(KIT_KERNEL) KIT_BUSYBOX=$(KIT_BUSYBOX) KIT_QEMU_DIR=$(KIT_QEMU_DIR) KIT_LKRN=$(KIT_LKRN) \
	  KIT_FLOPPY_KERNEL=$(KIT_FLOPPY_KERNEL) KIT_BUSYBOX_STAGE1=$(KIT_BUSYBOX_STAGE1) \
	  scripts/demo.sh

bench:
	@scripts/deps.sh test bench
	$(CARGO) build --release -p mosboot
	@scripts/bench/run.sh

# Coverage-guided fuzzing (cargo-fuzz + libFuzzer; RUSTC_BOOTSTRAP lets stable rustc take its
# -Z flags): each target runs FUZZ_RUNS executions from the corpus kept in fuzz/corpus (new
# inputs go to fuzz/target/corpus, not into the repo). `make test` replays the corpus only.
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS := dhcp tftp lease_log config http
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz
	@cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/corpus/$$t && \
	  RUSTC_BOOTSTRAP=1 nice -n 19 $(CARGO) fuzz run -s none $$t target/corpus/$$t corpus/$$t -- \
	    -runs=$(FUZZ_RUNS) -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 || exit 1; \
	done

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
