import ArgumentParser
import Foundation
import MoETensor
import MoECheckpoint
import MoEModels
import MoETokenizer
import MoECompression
import MoETraining

/// A default as `--help` prints it (the presets' values, so the text cannot drift from what runs).
private func g(_ v: some BinaryFloatingPoint) -> String { String(format: "%g", Double(v)) }

/// Options every training command shares.
struct TrainingOptions: ParsableArguments {
    @Option(parsing: .upToNextOption, help: "Training data: .txt files (one token stream), .jsonl files with instruction/response, or folders of them. Training reads the first ~90% of each file; the rest is the validation slice (eval perplexity --validation-of).")
    var data: [String]
    @Option(help: "Optimiser steps (default: heal \(TrainerSettings.healing.steps), compress-experts \(TrainerSettings.compressedExperts.steps)).") var steps: Int?
    @Option(help: "Peak learning rate (warm-up then cosine to 0; default: heal \(g(TrainerSettings.healing.learningRate)) as MoEITS, compress-experts \(g(TrainerSettings.compressedExperts.learningRate)) as the paper's OLMoE recipe).") var lr: Float?
    @Option(help: "Sequences per micro-batch.") var batch = 8
    @Option(help: "Micro-batches per optimiser step.") var gradAccum = 1
    @Option(help: "Tokens per sequence.") var seqLen = 256
    @Option(help: "Warm-up fraction of the steps (default: heal \(g(TrainerSettings.healing.warmupRatio)), compress-experts \(g(TrainerSettings.compressedExperts.warmupRatio))).") var warmupRatio: Double?
    @Option(help: "AdamW decoupled weight decay (default: heal \(g(TrainerSettings.healing.weightDecay)), compress-experts \(g(TrainerSettings.compressedExperts.weightDecay))).") var weightDecay: Float?
    @Option(help: "Clip the global gradient norm to this (0: no clipping).") var maxGradNorm = 1.0
    @Option(help: "Seed of data sampling, initialisation and dropout.") var seed: UInt64 = 0
    @Option(help: "NEFTune noise α on the input embeddings (MoEITS heals with 5; default: off).") var neftuneAlpha: Float?
    @Flag(help: "Keep every layer's activations instead of recomputing them in the backward pass (faster, more memory).") var noRecompute = false
    @Option(help: "Write a resumable checkpoint every N steps (next to --output).") var checkpointEvery = 0
    @Flag(help: "Continue from the checkpoint an interrupted run with the same options left next to --output (if there is one).") var resume = false
    @Flag(help: "No progress on stderr.") var quiet = false

    /// Checked against the heal stage's rules (compress-experts shares them).
    func validate() throws {
        try checkOptions("heal", [("--steps", "steps", steps.map(Double.init)), ("--lr", "lr", lr.map(Double.init)), ("--batch", "batch", Double(batch)),
                                  ("--grad-accum", "grad_accum", Double(gradAccum)), ("--seq-len", "seq_len", Double(seqLen)),
                                  ("--warmup-ratio", "warmup_ratio", warmupRatio), ("--weight-decay", "weight_decay", weightDecay.map(Double.init)),
                                  ("--max-grad-norm", "max_grad_norm", maxGradNorm), ("--checkpoint-every", "checkpoint_every", Double(checkpointEvery)),
                                  ("--neftune-alpha", "neftune_alpha", neftuneAlpha.map(Double.init))])
    }

    /// The command's settings, with its method's defaults for what was not given.
    func settings(defaults d: TrainerSettings) -> TrainerSettings {
        var s = d
        s.steps = steps ?? d.steps; s.learningRate = lr ?? d.learningRate; s.batchSize = batch; s.gradientAccumulation = gradAccum; s.seqLen = seqLen
        s.warmupRatio = warmupRatio ?? d.warmupRatio; s.weightDecay = weightDecay ?? d.weightDecay; s.maxGradNorm = maxGradNorm; s.seed = seed
        s.recompute = !noRecompute; s.checkpointEvery = checkpointEvery; s.neftuneAlpha = neftuneAlpha
        return s
    }

    /// Where resumable checkpoints of a run writing `out` live: `.OUT.moepress-train` beside it.
    func stateDir(for out: URL) -> URL { out.deletingLastPathComponent().appendingPathComponent(".\(out.lastPathComponent).moepress-train") }

    func files() throws -> [URL] {
        var out: [URL] = []
        for p in data {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: p, isDirectory: &isDir) else { throw CLIError("\(p): no such file or folder") }
            if isDir.boolValue {
                let items = try FileManager.default.contentsOfDirectory(atPath: p).sorted().filter { $0.hasSuffix(".txt") || $0.hasSuffix(".jsonl") }
                guard !items.isEmpty else { throw CLIError("\(p): no .txt or .jsonl files") }
                out += items.map { URL(fileURLWithPath: p).appendingPathComponent($0) }
            } else {
                out.append(URL(fileURLWithPath: p))
            }
        }
        return out
    }
}

struct Heal: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Heal a compressed model with LoRA (MoEITS / MoE-I² stage 3).",
        discussion: """
        Trains LoRA adapters (rank --lora-rank, scale α/r, dropout on the adapter input) on the projections named \
        by --targets (q,k,v,o: attention, with q_a,q_b,kv_a,kv_b for DeepSeek's latent attention; gate,up,down: routed \
        experts, shared experts and dense MLPs; router; a kind the model lacks adapts nothing) \
        with AdamW, warm-up + cosine, gradient clipping and accumulation; everything else stays frozen. \
        Defaults: r \(LoRA.Settings().rank), α \(g(LoRA.Settings().alpha)), dropout \(g(LoRA.Settings().dropout)), warm-up \
        \(g(TrainerSettings.healing.warmupRatio * 100))%, weight decay \(g(TrainerSettings.healing.weightDecay)), \(TrainerSettings.healing.steps) \
        steps as MoEITS (methods.md §2.6); lr \(g(TrainerSettings.healing.learningRate)), chosen on the validation slice after MoE-I² \
        50% pruning of mixtral-ref (71% of the validation perplexity gap recovered, against 29% at MoEITS's 2e-4). \
        Data: plain text is one token stream sampled in windows of --seq-len; JSONL lines \
        {"instruction", "response"[, "input"]} use the template "Instruction:\\n{instruction}\\n\\nResponse:\\n" and only \
        the response (and EOS) is in the loss. Training reads the first ~90% of each data file; before and after \
        training heal prints the validation loss, the mean NLL on 32 fixed windows (seed 0) of --seq-len tokens \
        from the rest of the files (the validation slice, never trained on), and training_log.json records both \
        (validationLossBefore, validationLossAfter). --output gets a PEFT adapter (adapter_config.json + \
        adapter_model.safetensors, for transformers v5 module paths; fused experts as PEFT target_parameters) and \
        training_log.json; --merge also writes the merged model to OUTPUT/merged (in the model's dtype unless \
        --merge-dtype says otherwise: bf16 rounding of W + s·B·A is the usual merge loss). A low-rank projection (a \
        decomposed expert) gets one adapter on each of its factors instead (SVD-LLM's update), merged into them at \
        the same rank so the model keeps its size; PEFT has no module for those, so they need --merge. \
        --neftune-alpha adds NEFTune noise to the input embeddings (MoEITS's training uses 5). Checkpoints for --resume go to \
        .OUTPUT.moepress-train next to the output and are removed on success. Supported model_type values: \(ModelRegistry.supportedModelTypes.joined(separator: ", ")).
        """)

    @Option(help: "The model folder to heal (e.g. a pruned or decomposed one).") var model: String
    @Option(help: "The output folder (PEFT adapter).") var output: String
    @Option(help: "LoRA rank r.") var loraRank = LoRA.Settings().rank
    @Option(help: "LoRA alpha (scale = α / r).") var loraAlpha: Float = LoRA.Settings().alpha
    @Option(help: "Dropout on the adapter input during training.") var loraDropout: Float = LoRA.Settings().dropout
    @Option(help: "Adapted projections, comma-separated: \(LoRA.allTargets.joined(separator: ",")).") var targets = LoRA.allTargets.joined(separator: ",")
    @Flag(help: "Also write the merged model (weights + adapters) to OUTPUT/merged.") var merge = false
    @Option(help: "dtype of the merged weights (with --merge): source (as the model's files; default), f32, bf16 or f16.") var mergeDtype: String?
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @OptionGroup var training: TrainingOptions
    @OptionGroup var out: OutputOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("heal", [("--lora-rank", "lora_rank", Double(loraRank)), ("--lora-alpha", "lora_alpha", Double(loraAlpha)),
                                  ("--lora-dropout", "lora_dropout", Double(loraDropout))])
        if let mergeDtype {
            guard Self.mergeDTypes.keys.contains(mergeDtype) else { throw usage("takes source, f32, bf16 or f16", "--merge-dtype") }
            guard merge else { throw usage("only --merge writes merged weights", "--merge-dtype") }
        }
        if out.shardSize != nil && !merge { throw usage("only --merge writes weights; the adapter is one file", "--shard-size") }
    }

    /// `--merge-dtype` values: nil keeps each weight's stored dtype.
    static let mergeDTypes: [String: DType?] = ["source": nil, "f32": .f32, "bf16": .bf16, "f16": .f16]

    func run() throws {
        try compute.run {
            let url = modelURL(model)
            let out = try newOutput(output, overwrite: overwrite)
            let mergeDType = Self.mergeDTypes[mergeDtype ?? "source"]!
            var lora = LoRA.Settings()
            lora.rank = loraRank; lora.alpha = loraAlpha; lora.dropout = loraDropout; lora.seed = training.seed
            lora.targets = targets.split(separator: ",").map(String.init)
            let record = try ResourceMonitor.shared.stage("heal") { try TrainingRuns.heal(model: url, files: try training.files(), lora: lora, settings: training.settings(defaults: .healing), output: out,
                                               merge: merge, mergeDType: mergeDType, stateDir: training.stateDir(for: out), resume: training.resume,
                                               quiet: training.quiet, shardSize: self.out.shardBytes) }
            if !training.quiet, let first = record.steps.first, let last = record.steps.last {
                log(String(format: "heal: loss %.4f → %.4f over %d steps in %.0f s → %@", first.loss, last.loss, record.steps.count, record.seconds, out.path))
            }
        }
    }
}

struct CompressExperts: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compress-experts",
        abstract: "Train Compressed Experts: run K main experts per token, the auxiliary ones as trained vectors (He et al. 2025).",
        discussion: """
        Each routed expert gets three vectors (gate-input and up-input scales of hidden size, an intermediate \
        scale), initialised to exactly 1. A token runs its first --main-experts top-k experts (by routing weight); \
        the others are mixed (weights renormalised among themselves) into one aggregate per token that scales \
        every main expert's inputs and intermediate activation (methods.md §4). --train all (default, as the \
        paper) trains every parameter; ce-only trains just the vectors. --no-ce trains the plain top-K baseline \
        instead (num_experts_per_tok set to K, no vectors), for comparison at equal steps; --no-ce with K = top-k \
        is the full model fine-tuned the same way (the paper's upper reference). The output is a \
        checkpoint with <prefix>.experts.<e>.ce_gate / ce_up / ce_mid and "moepress.compressed_experts" in \
        config.json, which every MoEPress command runs and HF transformers loads through the included \
        modeling_moepress.py (trust_remote_code=True); training_log.json records the run. Defaults follow the \
        paper's OLMoE recipe where it applies: lr 2e-5, warm-up 3%, no weight decay.
        """)

    enum Train: String, ExpressibleByArgument { case all, ceOnly = "ce-only" }

    @Option(help: "The model folder.") var model: String
    @Option(help: "Main experts per token (K; the paper's default is top-k/2).") var mainExperts: Int
    @Option(help: "What to train: all or ce-only.") var train: Train = .all
    @Flag(help: "Train the plain top-K model instead (the baseline).") var noCe = false
    @Option(help: "Learning rate of the compressed-expert vectors (default: --lr).") var ceLr: Float?
    @Option(help: "The output checkpoint folder.") var output: String
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @OptionGroup var training: TrainingOptions
    @OptionGroup var out: OutputOptions
    @OptionGroup var compute: ComputeOptions

    func validate() throws {
        try checkOptions("compress_experts", [("--main-experts", "main_experts", Double(mainExperts)), ("--ce-lr", "ce_lr", ceLr.map(Double.init))])
        if noCe {
            if ceLr != nil { throw usage("--no-ce trains no compressed-expert vectors", "--ce-lr") }
            if train == .ceOnly { throw usage("--no-ce trains no compressed-expert vectors", "--train ce-only") }
        }
    }

    func run() throws {
        try compute.run {
            let url = modelURL(model)
            let out = try newOutput(output, overwrite: overwrite)
            let ce = HFRemoteCode.compressedExpertsOutput(mainExperts: mainExperts, plainTopK: noCe)
            // The paper's OLMoE recipe (methods.md §4): lr 2e-5, 3% warm-up, no weight decay.
            var settings = training.settings(defaults: .compressedExperts)
            settings.ceLearningRate = ceLr
            let record = try ResourceMonitor.shared.stage("compress-experts") { try TrainingRuns.compressExperts(model: url, files: try training.files(), mainExperts: mainExperts, ceOnly: train == .ceOnly,
                                                          plainTopK: noCe, settings: settings, output: out, stateDir: training.stateDir(for: out),
                                                          resume: training.resume, quiet: training.quiet, configEdit: ce.edit,
                                                          extraFiles: ce.files, shardSize: self.out.shardBytes) }
            if !training.quiet, let first = record.steps.first, let last = record.steps.last {
                log(String(format: "compress-experts: loss %.4f → %.4f over %d steps in %.0f s → %@", first.loss, last.loss, record.steps.count, record.seconds, out.path))
            }
        }
    }
}

func jsonData<T: Encodable>(_ v: T) throws -> Data {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    return try enc.encode(v)
}
