# The reference guest as a convenience library: writers at full speed, the
# ledger of every block, huge-page pools. Linked by wpsnap-guest, the
# wpsnap CLI (demo, bench) and the tests.
noinst_LTLIBRARIES += guest/libwpsguest.la
guest_libwpsguest_la_SOURCES = \
	guest/guest.h \
	guest/guest_int.h \
	guest/guest.c \
	guest/ledger.c \
	guest/hugepool.c
