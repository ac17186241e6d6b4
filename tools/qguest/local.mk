# The QEMU test guest (tools/qguest/qguest.c): a freestanding ELF32 that
# QEMU's multiboot loader runs, built for `make check` by its own rule with
# the host gcc in 32-bit freestanding mode. Not an automake program on
# purpose: none of the project's flags (sanitizers, PIE, libc, libtool)
# may reach a kernel, and no 32-bit libc or libgcc is needed.
QGUEST_COMPILE_FLAGS = -m32 -march=i686 -ffreestanding -fno-pic -fno-pie \
	-fno-stack-protector -fno-asynchronous-unwind-tables -fno-builtin \
	-nostdlib -O2 -std=gnu11 $(WARN_CFLAGS)
QGUEST_LINK_FLAGS = -m32 -nostdlib -no-pie -static -Wl,--build-id=none \
	-Wl,--no-warn-rwx-segments
EXTRA_DIST += tools/qguest/boot.S tools/qguest/qguest.c tools/qguest/qguest.ld
check_DATA = tools/qguest/qguest.elf
CLEANFILES += tools/qguest/qguest.elf tools/qguest/boot.o tools/qguest/qguest.o

tools/qguest/qguest.elf: $(srcdir)/tools/qguest/boot.S \
		$(srcdir)/tools/qguest/qguest.c $(srcdir)/tools/qguest/qguest.ld
	$(AM_V_GEN)$(MKDIR_P) tools/qguest && \
	$(CC) $(QGUEST_COMPILE_FLAGS) -c -o tools/qguest/boot.o \
		$(srcdir)/tools/qguest/boot.S && \
	$(CC) $(QGUEST_COMPILE_FLAGS) -c -o tools/qguest/qguest.o \
		$(srcdir)/tools/qguest/qguest.c && \
	$(CC) $(QGUEST_LINK_FLAGS) -Wl,-T,$(srcdir)/tools/qguest/qguest.ld \
		-o $@ tools/qguest/boot.o tools/qguest/qguest.o
