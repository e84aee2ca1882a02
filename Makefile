# `make demo`: install, build and run the MoE-I² recipe on ../shared/models/mixtral-ref (about 8 minutes on
# 2 cores), ending with the before/after table and runs/demo/report.html. `make test` runs the test suite.
.PHONY: demo test
demo:
	scripts/demo.sh
test:
	swift test
