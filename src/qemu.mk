# The QEMU module (<wpsnap/qemu.h>): live snapshots of an unmodified
# QEMU's guest RAM through its monitor, and the guest-physical view of
# such an image. The monitor speaks JSON through jansson.
AM_CPPFLAGS += $(JANSSON_CFLAGS)
libwpsnap_priv_la_SOURCES += src/qemu.c src/qemu_int.h src/qemu_qmp.c \
	src/qemu_layout.c src/qemu_watchdog.c
libwpsnap_priv_la_LIBADD += $(JANSSON_LIBS)
