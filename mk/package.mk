# The Debian package and its test: `make deb` builds target/deb/mosboot_<version>_amd64.deb;
# `make test-package` installs it into a minimal Debian root booted with systemd-nspawn.

.PHONY: deb test-package

deb:
	@scripts/deps.sh build package
	@packaging/deb/build.sh

test-package: deb kit
	@KIT_KERNEL=$(KIT_KERNEL) KIT_BUSYBOX=$(KIT_BUSYBOX) tests/package/run.sh
