# mosboot: the two commands a new user runs first are `make demo` and `make test` (as root on
# Debian 12). Every target installs what it needs (scripts/deps.sh) and builds the node kit
# (mk/kit.mk) into a cache outside the work tree, so a fresh clone on a fresh machine just works.

SHELL := /bin/bash
CARGO ?= cargo
MOSBOOT := $(CURDIR)/target/debug/mosboot
export MOSBOOT_BIN := $(MOSBOOT)

include mk/kit.mk
include mk/package.mk

.PHONY: all deps build test unit-test e2e demo bench lint fmt clean sample

all: build

deps:
	@scripts/deps.sh build test

build:
	$(CARGO) build --workspace --all-targets

# Everything: unit tests, integration tests with real clients in namespaces, and the virtual lab
# end-to-end test (needs the kit: first run builds a kernel and busybox, ~10 minutes).
test: deps kit build
	@KIT_KERNEL=$(KIT_KERNEL) KIT_BUSYBOX=$(KIT_BUSYBOX) KIT_QEMU_DIR=$(KIT_QEMU_DIR) KIT_LKRN=$(KIT_LKRN) \
	  $(CARGO) test --workspace --no-fail-fast -- --test-threads=2

# Unit tests only (no root, no kit).
unit-test:
	$(CARGO) test --workspace --lib --bins

# The built-in demo: builds everything and PXE-boots three emulated PCs that join the cluster.
demo: deps kit build
	@KIT_KERNEL=$(KIT_KERNEL) KIT_BUSYBOX=$(KIT_BUSYBOX) KIT_QEMU_DIR=$(KIT_QEMU_DIR) KIT_LKRN=$(KIT_LKRN) \
	  scripts/demo.sh

bench:
	@scripts/deps.sh test bench
	$(CARGO) build --release -p mosboot
	@scripts/bench/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean:
	$(CARGO) clean
