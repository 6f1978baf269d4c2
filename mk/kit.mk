# Node kit: the i486 test kernel, the floppy kernel, 486-safe static busyboxes (full, lean, the
# floppy's stage-1) and Debian 13's iPXE, built from
# Debian packages and cached outside the work tree under $(KIT_DIR), each keyed by its inputs.
# Included by the top-level Makefile. The path variables are recursive (=) on purpose: their key
# depends on installed package versions, so they are computed when a recipe uses them, after the
# kit targets have installed what they need. Use them in recipes, not as prerequisites.

KIT_DIR ?= /var/cache/mosboot-kit
export KIT_DIR
KIT_SCRIPTS := $(abspath $(dir $(lastword $(MAKEFILE_LIST)))../scripts/kit)

KIT_KERNEL   = $(shell $(KIT_SCRIPTS)/key.sh kernel)
KIT_BUSYBOX  = $(shell $(KIT_SCRIPTS)/key.sh busybox)
# Only the applets of scripts/kit/busybox-lean.applets: about half the size, for small-RAM nodes.
KIT_BUSYBOX_LEAN = $(shell $(KIT_SCRIPTS)/key.sh busybox-lean)
# The floppy's: ISA NIC drivers built in, everything else a stage-1 does not need left out.
KIT_FLOPPY_KERNEL = $(shell $(KIT_SCRIPTS)/key.sh floppy-kernel)
# Only the applets of scripts/kit/busybox-stage1.applets: the floppy stage-1's.
KIT_BUSYBOX_STAGE1 = $(shell $(KIT_SCRIPTS)/key.sh busybox-stage1)
KIT_IPXE     = $(shell $(KIT_SCRIPTS)/key.sh ipxe-dir)
# For QEMU: -L $(KIT_QEMU_DIR) (Debian 13 NIC ROMs; SeaBIOS still comes from the default path).
KIT_QEMU_DIR = $(shell $(KIT_SCRIPTS)/key.sh qemu-dir)
KIT_LKRN     = $(shell $(KIT_SCRIPTS)/key.sh lkrn)

.PHONY: kit kit-kernel kit-floppy-kernel kit-busybox kit-busybox-lean kit-busybox-stage1 kit-ipxe \
	kit-paths kit-smoke

# Sequential on purpose: the kernel and busybox builds each use both cores.
kit:
	@$(KIT_SCRIPTS)/ipxe.sh
	@$(KIT_SCRIPTS)/kernel.sh
	@$(KIT_SCRIPTS)/busybox.sh
	@KERNEL_FLAVOUR=floppy-i486 $(KIT_SCRIPTS)/kernel.sh
	@BUSYBOX_FLAVOUR=stage1 $(KIT_SCRIPTS)/busybox.sh

kit-kernel:
	@$(KIT_SCRIPTS)/kernel.sh

kit-floppy-kernel:
	@KERNEL_FLAVOUR=floppy-i486 $(KIT_SCRIPTS)/kernel.sh

kit-busybox-stage1:
	@BUSYBOX_FLAVOUR=stage1 $(KIT_SCRIPTS)/busybox.sh

kit-busybox:
	@$(KIT_SCRIPTS)/busybox.sh

kit-busybox-lean:
	@BUSYBOX_FLAVOUR=lean $(KIT_SCRIPTS)/busybox.sh

kit-ipxe:
	@$(KIT_SCRIPTS)/ipxe.sh

kit-paths:
	@echo "KIT_KERNEL   = $(KIT_KERNEL)"
	@echo "KIT_BUSYBOX  = $(KIT_BUSYBOX)"
	@echo "KIT_BUSYBOX_LEAN = $(KIT_BUSYBOX_LEAN)"
	@echo "KIT_FLOPPY_KERNEL = $(KIT_FLOPPY_KERNEL)"
	@echo "KIT_BUSYBOX_STAGE1 = $(KIT_BUSYBOX_STAGE1)"
	@echo "KIT_IPXE     = $(KIT_IPXE)"
	@echo "KIT_QEMU_DIR = $(KIT_QEMU_DIR)"
	@echo "KIT_LKRN     = $(KIT_LKRN)"

# Boots the kit's kernel + busybox on an emulated 486 with both initrd formats (cpio, ext2).
kit-smoke: kit
	@$(KIT_SCRIPTS)/smoke.sh
