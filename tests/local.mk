include $(srcdir)/tests/stream.mk
include $(srcdir)/tests/guest.mk
include $(srcdir)/tests/engine.mk
include $(srcdir)/tests/bench.mk
include $(srcdir)/tests/daemon.mk
include $(srcdir)/tests/pager.mk
include $(srcdir)/tests/wset.mk
include $(srcdir)/tests/transaction.mk
include $(srcdir)/tests/attach.mk
include $(srcdir)/tests/checkpoint.mk

# The shape of the tree: the floors' include rules, and the shared
# library's exports against the public headers (docs/ARCHITECTURE.md).
TESTS += tests/layering.sh tests/abi.sh
EXTRA_DIST += tests/layering.sh tests/abi.sh
