# The library: every policy a front end needs, once (docs/ARCHITECTURE.md).
libwpsnap_priv_la_SOURCES += \
	src/snapshot.c \
	src/snapshot_trace.h \
	src/checkpoint.c \
	src/ckpt_session.c \
	src/chain.c

# The VMM-side client of wpsnapd (<wpsnap/client.h>); it speaks JSON
# through jansson.
AM_CPPFLAGS += $(JANSSON_CFLAGS)
libwpsnap_priv_la_SOURCES += src/client.c
libwpsnap_priv_la_LIBADD += $(JANSSON_LIBS)
pkginclude_HEADERS += include/wpsnap/client.h
