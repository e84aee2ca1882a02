// swift-tools-version: 6.1
import PackageDescription

// Hot numeric code needs a target CPU: without one every SIMD FMA and every f16 conversion becomes a
// library call (see ../shared/docs/swift-stack.md §2–3). Haswell (AVX2 + FMA + F16C) is the safe
// baseline for x86-64 servers; kernels are shaped for 16 ymm registers.
#if arch(x86_64)
let cpuFlags: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let cpuFlags: [SwiftSetting] = []
#endif
let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]
// The numeric modules are optimised in debug builds too: the test suite runs real models over real data
// (parity, perplexity, tasks), which unoptimised Swift loops would make 50× slower. -enable-testing
// stays on, so @testable imports still work.
let optimised: [SwiftSetting] = cpuFlags + strict + [.unsafeFlags(["-O"], .when(configuration: .debug))]

let package = Package(
    name: "MoEPress",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "moepress", targets: ["moepress"]),
        .library(name: "MoETensor", targets: ["MoETensor"]),
        .library(name: "MoECheckpoint", targets: ["MoECheckpoint"]),
        .library(name: "MoEModels", targets: ["MoEModels"]),
        .library(name: "MoETokenizer", targets: ["MoETokenizer"]),
        .library(name: "MoEEval", targets: ["MoEEval"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        // OpenBLAS (cblas) + LAPACKE, installed by scripts/setup.sh.
        .systemLibrary(name: "CBLAS", providers: [.apt(["libopenblas-dev", "liblapacke-dev"])]),
        // Kernels of our own where no library serves: products with bf16/f16 weights read in place, one
        // version per instruction set (portable, AVX2, AVX-512) chosen at run time. Always optimised.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-fno-fast-math", "-ffp-contract=off"])]),
        // Tensors, weights in their stored dtype, BLAS/LAPACK wrappers, transformer ops, parallel loops.
        .target(name: "MoETensor", dependencies: ["CBLAS", "CKernels"], swiftSettings: optimised),
        // The one JSON reader of every input file (config.json, tokenizer.json, safetensors headers): text kept
        // exactly, members in order, a key given twice refused.
        .target(name: "MoEJSON", swiftSettings: optimised),
        // safetensors (mmap, shards, validation, atomic writes) and HF config decoding.
        .target(name: "MoECheckpoint", dependencies: ["MoETensor", "MoEJSON"], swiftSettings: cpuFlags + strict),
        // HF tokenizer.json: normalizers, pre-tokenizers (own regex engine), BPE, post-processors, decoders.
        .target(name: "MoETokenizer", dependencies: ["MoEJSON"], swiftSettings: optimised),
        // The MoE block abstraction, attention variants, KV cache, one file per family.
        .target(name: "MoEModels", dependencies: ["MoETensor", "MoECheckpoint"], swiftSettings: optimised),
        // Calibration: sampled windows, layer-by-layer activations and expert statistics, cache with manifest.
        .target(name: "MoECalibration", dependencies: ["MoETensor", "MoECheckpoint", "MoEModels", "MoETokenizer"], swiftSettings: optimised),
        // Compression plans and their application: pruning methods (frequency, REAP, NAEE, MoEITS, MoE-I²).
        .target(name: "MoECompression", dependencies: ["MoETensor", "MoECheckpoint", "MoEModels", "MoECalibration", "MoETokenizer"], swiftSettings: optimised),
        // Training: explicit backward passes, AdamW, LoRA healing, compressed experts.
        .target(name: "MoETraining", dependencies: ["MoETensor", "MoECheckpoint", "MoEModels", "MoETokenizer"], swiftSettings: optimised),
        // Recipes (YAML), resumable stages with manifests, run summaries and the HTML report.
        .target(name: "MoEPipeline", dependencies: ["MoETensor", "MoECheckpoint", "MoEModels", "MoETokenizer", "MoECalibration", "MoECompression",
                                                    "MoETraining", "MoEEval", .product(name: "Yams", package: "Yams")], swiftSettings: cpuFlags + strict),
        // Perplexity, multiple-choice tasks (lm-eval protocol), generation.
        .target(name: "MoEEval", dependencies: ["MoETensor", "MoEModels", "MoETokenizer", "MoEJSON"], swiftSettings: optimised),
        // The command-line tool.
        .executableTarget(
            name: "moepress",
            dependencies: [
                "MoETensor", "MoECheckpoint", "MoEModels", "MoETokenizer", "MoEEval", "MoECalibration", "MoECompression", "MoETraining", "MoEPipeline",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: cpuFlags + strict),
        .testTarget(name: "MoETensorTests", dependencies: ["MoETensor"], resources: [.copy("Fixtures")], swiftSettings: cpuFlags + strict),
        .testTarget(name: "MoECheckpointTests", dependencies: ["MoECheckpoint"], swiftSettings: cpuFlags + strict),
        .testTarget(
            name: "MoEModelsTests", dependencies: ["MoEModels", "MoECheckpoint"],
            resources: [.copy("Fixtures")], swiftSettings: cpuFlags + strict),
        .testTarget(name: "MoETokenizerTests", dependencies: ["MoETokenizer"], resources: [.copy("Fixtures")], swiftSettings: cpuFlags + strict),
        .testTarget(name: "MoEEvalTests", dependencies: ["MoEEval", "MoEModels", "MoETokenizer"], resources: [.copy("Fixtures")], swiftSettings: cpuFlags + strict),
        .testTarget(name: "MoECompressionTests", dependencies: ["MoECompression", "MoECalibration", "MoEModels", "MoECheckpoint", "MoETokenizer"], swiftSettings: cpuFlags + strict),
        .testTarget(name: "MoETrainingTests", dependencies: ["MoETraining", "MoEModels", "MoECheckpoint", "MoECompression"], resources: [.copy("Fixtures")], swiftSettings: cpuFlags + strict),
        .testTarget(name: "MoEPipelineTests", dependencies: ["MoEPipeline", "MoECheckpoint"], swiftSettings: cpuFlags + strict),
        // Seeded mutations of every input a user hands in: clean error or valid result, never a crash, hang or NaN.
        .testTarget(name: "MoEFuzzTests", dependencies: ["MoECheckpoint", "MoEModels", "MoETokenizer", "MoEEval", "MoEPipeline", "MoETensor"],
                    swiftSettings: cpuFlags + strict),
        // Runs the built `moepress` binary: exit codes, error lines, outputs.
        .testTarget(name: "MoEPressCLITests", dependencies: ["moepress", "MoECheckpoint"], swiftSettings: cpuFlags + strict),
    ])
