# oathpipe — the two commands a new user needs are `make demo` and `make test`.
GO      ?= go
GOFLAGS ?=
export GOFLAGS

.PHONY: all build demo test unit fuzz lint lint-shell bench package clean

all: build

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

build:
	$(GO) build -o bin/oathpipe .
	$(GO) build -o bin/oathpipe-dev ./cmd/oathpipe-dev

## demo: run the whole pipeline locally against Azurite and the Key Vault and Graph stand-ins.
demo: node_modules/.package-lock.json build
	./bin/oathpipe-dev demo

## test: every test (unit, contract, integration against Azurite and the stand-ins, end to end),
## plus gofmt, go vet, shellcheck and a short fuzz run of every parser.
test: node_modules/.package-lock.json lint unit fuzz

lint: lint-shell
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

## lint-shell: shellcheck the scripts. A missing shellcheck fails the target (it never skips).
lint-shell:
	@command -v shellcheck >/dev/null 2>&1 || { echo "make lint: shellcheck is not installed (apt-get install shellcheck; .ci/run installs it)"; exit 1; }
	shellcheck .ci/run infra/*.sh
	@for f in .ci/run infra/*.sh; do [ -f "$$f" ] && bash -n "$$f"; done; true

unit:
	$(GO) test -count=1 -timeout 30m ./...

FUZZTIME ?= 10s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

## bench: the speed and memory goals (see docs/benchmarks.md).
bench: node_modules/.package-lock.json
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1x ./...

## package: dist/oathpipe.zip for zip deploy (linux/amd64, host.json at the root).
package:
	$(GO) run ./internal/packager -o dist/oathpipe.zip

clean:
	rm -rf bin dist
