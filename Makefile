# minfer's front door. CMake is the build; these targets only call it (one source of truth).
#   make          build everything (core, cuda when nvcc exists, tools, tests)
#   make test     build, fetch the test models (SmolLM2, Gemma 3 270M), run every CPU test
#   make chat     build, fetch the default model, start a chat
#   make bench    build and benchmark the default model
#   make deps     install missing Debian packages (every other target runs it first)

BUILD_DIR ?= build
BUILD_TYPE ?= Release
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)
# Debian packages the build and tests need (the CUDA toolkit is used when already installed).
DEB_PACKAGES := cmake ninja-build g++ doctest-dev libstb-dev libpcre2-dev nlohmann-json3-dev \
                libsentencepiece-dev python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test chat bench model fuzz clean

# The default model (SmolLM2-135M-Instruct Q4_1) lives outside the tree, in MINFER_CACHE.
MINFER_CACHE ?= $(HOME)/.cache/minfer
export MINFER_CACHE
MODEL ?= smollm2
# The real models the CPU tests compare with llama.cpp's golden outputs (fetched once, then cached):
# SmolLM2 (98 MB) and Gemma 3 270M (253 MB, the sliding-window architecture).
TEST_MODELS := smollm2 gemma3

all: build

deps:
	@missing=""; \
	for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(BUILD_DIR)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS)

build: deps $(BUILD_DIR)/build.ninja
	cmake --build $(BUILD_DIR) -j $(JOBS)

model:
	@bash tools/fetch-model.sh $(MODEL) >/dev/null

test: build
	@for m in $(TEST_MODELS); do bash tools/fetch-model.sh $$m >/dev/null || exit 1; done
	ctest --test-dir $(BUILD_DIR) -L cpu --output-on-failure -j $(JOBS)

chat: build model
	$(BUILD_DIR)/minfer chat -m "$$(bash tools/fetch-model.sh $(MODEL))" $(ARGS)

bench: build model
	$(BUILD_DIR)/minfer bench -m "$$(bash tools/fetch-model.sh $(MODEL))" $(ARGS)

# libFuzzer + ASan/UBSan on the GGUF and safetensors readers; FUZZ_SECONDS=60 each by default.
fuzz: deps
	bash tests/fuzz/run.sh $(or $(FUZZ_SECONDS),60)

clean:
	rm -rf $(BUILD_DIR)
