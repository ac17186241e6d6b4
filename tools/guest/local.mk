# owned by the reference guest: the guest as a convenience library (linked
# by wpsnap-guest, the wpsnap CLI and the tests) and its own binary.
noinst_LTLIBRARIES += tools/guest/libwpsguest.la
tools_guest_libwpsguest_la_SOURCES = \
	tools/guest/guest.h \
	tools/guest/guest_int.h \
	tools/guest/guest.c \
	tools/guest/ledger.c \
	tools/guest/hugepool.c

bin_PROGRAMS += tools/wpsnap-guest
tools_wpsnap_guest_SOURCES = tools/wpsnap-guest.c
tools_wpsnap_guest_LDADD = tools/guest/libwpsguest.la libwpsnap.la
