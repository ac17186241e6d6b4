include $(srcdir)/tests/stream.mk
include $(srcdir)/tests/guest.mk
include $(srcdir)/tests/engine.mk
include $(srcdir)/tests/bench.mk
include $(srcdir)/tests/daemon.mk
include $(srcdir)/tests/pager.mk
include $(srcdir)/tests/transaction.mk
include $(srcdir)/tests/attach.mk
