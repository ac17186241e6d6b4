EXTRA_DIST += docs/RELIABILITY.md docs/FORMAT.md docs/ENGINE.md docs/PERFORMANCE.md docs/RESTORE.md \
	docs/CHECKPOINT.md
