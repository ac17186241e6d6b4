# netbuf: network output commit for periodic checkpoints (docs/NETBUF.md).
# Built as a convenience library so that only these files see the libnl
# flags; it is linked into libwpsnap.
pkginclude_HEADERS += include/wpsnap/netbuf.h
noinst_LTLIBRARIES += src/libwpsnetbuf.la
src_libwpsnetbuf_la_SOURCES = \
	src/netbuf.c \
	src/netbuf_int.h \
	src/netbuf_nfq.c \
	src/netbuf_plug.c
src_libwpsnetbuf_la_CFLAGS = $(AM_CFLAGS) $(NL_CFLAGS) $(NLNF_CFLAGS)
src_libwpsnetbuf_la_LIBADD = $(NL_LIBS) $(NLNF_LIBS)
libwpsnap_priv_la_LIBADD += src/libwpsnetbuf.la
