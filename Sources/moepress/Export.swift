import ArgumentParser
import Foundation
import MoECheckpoint
import MoETensor
import MoEModels
import MoECompression

struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-export a compressed checkpoint in a form other tools load.",
        discussion: """
        --dense: multiplies every low-rank factor pair (<name>.lowrank_a · <name>.lowrank_b, from `moepress \
        decompose`) back into <name>.weight in the factors' dtype and drops the low-rank config entry and \
        remote code: a stock checkpoint with the decomposed model's function (no size gain).


        --uniform: stock HF transformers and vLLM need the same number of experts in every layer. A pruned \
        checkpoint whose layers kept different numbers (MoE-I², MoEITS with τ) carries a "moepress" section that \
        only MoEPress reads. This computes the nearest uniform plan (every layer keeps round(mean kept), dropping \
        or restoring experts by the scores in plan.json), prints how it differs, and writes it applied to the \
        original model given by --original (default: the model named in plan.json).


        --gguf: one GGUF file for llama.cpp (mixtral as its `llama` architecture, qwen2_moe as `qwen2moe`), in \
        --gguf-type f32, f16, bf16 or q8_0 (norms and routers stay f32), with tokenizer metadata that gives HF's \
        token ids (SentencePiece-style BPE scored by merge rank; byte-level BPE with the GPT-2 split). GGUF holds \
        one expert count per model and whole weights: unequal counts need --uniform first, low-rank factors \
        --dense first; compressed experts have no GGUF form (MoEPress and HF run them).
        """)

    @Option(help: "A MoEPress-compressed checkpoint folder (pruned with plan.json for --uniform, decomposed for --dense).") var model: String
    @Flag(help: "Produce the nearest plan with equal expert counts per layer.") var uniform = false
    @Flag(help: "Multiply low-rank factors back into dense weights.") var dense = false
    @Flag(help: "Write one GGUF file for llama.cpp (--output is the .gguf file).") var gguf = false
    @Option(help: "Tensor type of the GGUF weights: f32, f16, bf16 (default) or q8_0.") var ggufType: String?
    @Option(help: "The unpruned model the plan was made from (default: plan.json's \"model\").") var original: String?
    @Option(help: "Output checkpoint folder (a .gguf file with --gguf).") var output: String
    @Flag(help: "Replace an existing output folder.") var overwrite = false
    @OptionGroup var out: OutputOptions

    func validate() throws {
        guard [uniform, dense, gguf].filter({ $0 }).count == 1 else { throw usage("pass exactly one of them", "--uniform, --dense, --gguf") }
        if let ggufType {
            guard gguf else { throw usage("only --gguf writes GGUF tensors", "--gguf-type") }
            guard ["f32", "f16", "bf16", "q8_0"].contains(ggufType.lowercased()) else { throw usage("takes f32, f16, bf16 or q8_0", "--gguf-type") }
        }
        if gguf && out.shardSize != nil { throw usage("a GGUF export is one file", "--shard-size") }
        if original != nil && !uniform { throw usage("only --uniform re-plans from the original model", "--original") }
    }

    func run() throws {
        try reportingErrors {
            let dir = modelURL(model)
            if gguf {
                let t: GGUF.TensorType = ["f32": .f32, "f16": .f16, "bf16": .bf16, "q8_0": .q8_0][(ggufType ?? "bf16").lowercased()]!
                let s = try GGUFExport.write(model: dir, output: URL(fileURLWithPath: output), type: t, overwrite: overwrite)
                log("export --gguf: \(s.architecture), \(s.tensors) tensors (\(t.name)), \(formatBytes(s.bytes)); tokenizer \(s.tokenizer) → \(output)")
                return
            }
            if dense {
                let n = try LowRank.densify(model: dir, output: URL(fileURLWithPath: output), overwrite: overwrite, shardSize: out.shardBytes)
                if n == 0 { log("note: \(dir.path) has no low-rank factors; the output is a plain copy") }
                log("export --dense: \(n) factor pairs multiplied back → \(output)")
                return
            }
            let planURL = dir.appendingPathComponent("plan.json")
            guard let data = FileManager.default.contents(atPath: planURL.path) else { throw CLIError("\(planURL.path): no plan.json (was this folder made by moepress prune?)") }
            let plan = try JSONDecoder().decode(PruningPlan.self, from: data)
            let source = modelURL(original ?? plan.model)
            let d = try ModelRegistry.describe(directory: source)
            let counts = plan.layers.map(\.kept.count)
            if plan.uniform {
                log("\(dir.path) already keeps \(counts.first ?? 0) experts in every layer; stock HF transformers loads it as it is.")
            } else {
                log("layers keep \(counts.map(String.init).joined(separator: "/")) experts: stock HF transformers and vLLM need equal counts per layer.")
            }
            let u = UniformPlan.nearest(plan, minimum: d.routing?.topK ?? 1)
            log("nearest uniform plan: \(u.layers.first?.kept.count ?? 0) experts in every layer (\(plan.removed) → \(u.removed) removed); applying it to \(source.path)")
            try PlanApplier.apply(u, model: source, output: URL(fileURLWithPath: output), overwrite: overwrite, shardSize: out.shardBytes)
        }
    }
}
