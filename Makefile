# `make demo`: install, build and run the MoE-I² recipe on ../shared/models/mixtral-ref (README gives its measured
# time), ending with the run table (every stage's model, Δ% against the original) and runs/demo/report.html.
# `make test` runs the test suite.
.PHONY: demo test
demo:
	scripts/demo.sh
test:
	swift test
