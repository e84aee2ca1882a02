import Foundation
import MoETensor
import MoECheckpoint
import MoEModels

/// Writing trained models: a full checkpoint in the source's spelling, and PEFT LoRA adapters.
public enum TrainedCheckpoint {
    /// Writes `model` (no LoRA adapters left) as a checkpoint folder shaped like `source`: every parameter
    /// under the source's name and dtype (experts per expert even when the source fused them, where the family has
    /// a per-expert layout; gpt-oss's fused, unquantised), other source
    /// tensors copied as they are, config.json edited by `config` (text in, text out), companions copied.
    /// `dtype` forces every parameter's dtype (e.g. f32 so a merged adapter is not rounded to bf16). `modules` writes one
    /// module per expert in every family (compressed-expert vectors need one; `modeling_moepress.py` loads it).
    public static func write(_ model: CausalLM, source: URL, output: URL, overwrite: Bool = false, dtype: DType? = nil, modules: Bool = false,
                             config edit: (String) -> String = { $0 }, extraFiles: [String: Data] = [:],
                             shardSize: Int = CheckpointWriter.defaultShardSize) throws {
        let config = try HFConfig(modelDirectory: source)
        let ckpt = try Checkpoint(directory: source)
        let names = try ModelRegistry.checkpointNames(directory: source, checkpoint: ckpt, perExpert: true, modules: modules)
        let stored = try ModelRegistry.checkpointNames(directory: source, checkpoint: ckpt)
        var counts: [DType: Int] = [:]
        for name in ckpt.names {
            guard let t = ckpt.info(name)?.dtype, t == .f32 || t == .f16 || t == .bf16 else { continue }
            counts[t, default: 0] += 1
        }
        let dominant: DType = counts.max { $0.value < $1.value }?.key ?? .f32
        var entries: [SafeTensorsWriter.Entry] = []
        var written = Set<String>()
        // Parameters that are parts of a fused tensor in the written layout (gpt-oss's experts) are gathered per tensor.
        var fused: [String: FusedTensors.Group] = [:]
        var fusedOrder: [String] = []
        for (logical, value) in TrainableParameters.all(model) {
            precondition(!logical.contains("lora_"), "merge LoRA adapters before writing a checkpoint")
            if let loc = names.location(logical), let part = loc.part {
                if fused[loc.name] == nil { fused[loc.name] = FusedTensors.Group(name: loc.name, shape: part.fullShape); fusedOrder.append(loc.name) }
                fused[loc.name]!.add(part, value)
                continue
            }
            guard let name = names.checkpointName(logical) else { throw TrainingError.invalid("no checkpoint name for parameter \(logical)") }
            let target = dtype ?? ckpt.info(name)?.dtype ?? dominant
            switch value {
            case .tensor(let t): entries.append(.init(name, t, dtype: target))
            case .stored(let w): entries.append(.init(name, w, dtype: target))
            }
            written.insert(name)
        }
        for name in fusedOrder {
            entries.append(try FusedTensors.entry(fused[name]!, dtype: dtype ?? ckpt.info(name)?.dtype ?? dominant))
            written.insert(name)
        }
        // Source tensors the parameters were read from as parts (fused experts, MXFP4 blocks and scales) are replaced.
        var replaced = Set<String>()
        for (_, loc) in stored.entries where loc.isFused {
            replaced.insert(loc.name)
            if let s = loc.mxfp4Scales { replaced.insert(s) }
        }
        for name in ckpt.names where !written.contains(name) && !replaced.contains(name) {
            if name.hasSuffix(".weight"), written.contains(String(name.dropLast(".weight".count)) + ".lowrank_a") { continue }
            if name.hasSuffix(".lowrank_a") || name.hasSuffix(".lowrank_b"), written.contains(String(name.dropLast(".lowrank_a".count)) + ".weight") { continue }
            entries.append(try ckpt.rawEntry(name))
        }
        // Weights once stored quantised (gpt-oss's MXFP4) are written unquantised: config.json stops saying otherwise.
        let dequantized = stored.entries.contains { $0.location.mxfp4Scales != nil }
        guard let text = try? String(contentsOfFile: config.path, encoding: .utf8) else { throw TrainingError.invalid("\(config.path): cannot read") }
        try AtomicDirectory.write(output, overwrite: overwrite) { out in
            try CheckpointWriter.write(entries, into: out.staging, shardSize: shardSize)
            let edited = edit(text)
            try (dequantized ? HFConfig.removingObjectEntry(edited, "quantization_config") : edited).write(to: out.url("config.json"), atomically: false, encoding: .utf8)
            for name in ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json", "plan.json", "decompose.json", "modeling_moepress.py"] {
                let src = source.appendingPathComponent(name)
                if FileManager.default.fileExists(atPath: src.path) { try FileManager.default.copyItem(at: src, to: out.url(name)) }
            }
            for (name, data) in extraFiles { try data.write(to: out.url(name)) }
        }
    }
}

/// HF PEFT's LoRA format (adapter_config.json + adapter_model.safetensors) for transformers v5 module
/// paths. Attention projections are `target_modules`; the router (`mlp.gate.weight`, or the family's
/// `routerModule`), the fused routed experts
/// and shared-expert and dense MLP projections are `target_parameters`. PEFT adapts the fused
/// `experts.gate_up_proj` [E, 2I, H] (gpt-oss: [E, H, 2I], gate and up interleaved) with one adapter per expert,
/// so MoEPress's separate gate and up adapters (rank r each) are written exactly as one of rank 2r:
/// A = [A_gate; A_up], B = diag(B_gate, B_up) (rows interleaved for gpt-oss),
/// with lora_alpha 2α to keep the scale α/r. PEFT refuses dropout on parameter targets, so the file says
/// lora_dropout 0 when there are any (dropout only matters in training; the training log records it).
public enum PEFTAdapter {
    public static func write(_ model: CausalLM, settings s: LoRA.Settings, baseModel: String, to dir: URL) throws {
        let prefix = "base_model.model.model.layers"
        var entries: [SafeTensorsWriter.Entry] = []
        var modules = Set<String>(), params: [String] = []
        func add(_ path: String, _ a: Tensor, _ b: Tensor) {
            entries.append(.init("\(path).lora_A.weight", a))
            entries.append(.init("\(path).lora_B.weight", b))
        }
        func linear(_ path: String, _ module: String, _ l: any LinearLayer) {
            guard let a = l as? LoRALinear else { return }
            add(path, a.a, a.b)
            modules.insert(module)
        }
        // Attention, dense-MLP and shared-expert projections live at their checkpoint names (the family's name
        // table; transformers v5 keeps those paths in memory), e.g. `self_attn.kv_a_proj_with_mqa`. Attention
        // projections are `target_modules`. MLP projections are `target_parameters` by their full suffix
        // (`mlp.shared_experts.down_proj.weight`): for the families whose experts v5 fuses, PEFT reads a
        // `down_proj` target module as the fused experts' and would drop a shared expert's or dense layer's adapter.
        let source = URL(fileURLWithPath: baseModel)
        let names = try ModelRegistry.checkpointNames(directory: source, checkpoint: Checkpoint(directory: source), perExpert: true)
        var mlpParams: [String] = []
        try model.forEachLinear { logical, l in
            guard let ad = l as? LoRALinear, !logical.contains(".moe.experts."), !logical.hasSuffix(".moe.router") else { return }
            guard let name = names.checkpointName(logical), name.hasPrefix("model.layers."), name.hasSuffix(".weight") else {
                throw TrainingError.invalid("\(baseModel): no module path for the adapted projection \(logical)")
            }
            let path = String(name.dropLast(".weight".count))
            if logical.contains(".attn.") {
                linear("base_model.model.\(path)", String(path.split(separator: ".").last!), l)
            } else {
                add("base_model.model.\(path)", ad.a, ad.b)
                let suffix = name.split(separator: ".").dropFirst(3).joined(separator: ".")   // after model.layers.<i>.
                if !mlpParams.contains(suffix) { mlpParams.append(suffix) }
            }
        }
        var expertKinds = Set<String>()
        for (i, layer) in model.layers.enumerated() {
            let p = "\(prefix).\(i)"
            switch layer.feedForward {
            case .dense: break
            case .moe(let b):
                if let ad = b.router.linear as? LoRALinear { add("\(p).\(names.routerModule)", ad.a, ad.b) }
                let hasGU = b.experts.contains { $0.gate is LoRALinear || $0.up is LoRALinear }
                let hasDown = b.experts.contains { $0.down is LoRALinear }
                let e = b.numExperts, r = s.rank, h = b.hiddenSize, inter = b.experts[0].intermediateSize
                if hasGU {
                    expertKinds.insert("gate_up")
                    let R = 2 * r
                    // The fused output index of gate/up row o: v5's [E, 2I, H] stacks them (o, I + o); gpt-oss's
                    // input-major [E, H, 2I] interleaves them (2o, 2o + 1).
                    let interleaved = names.location("layers.\(i).moe.experts.0.gate")?.part.map { $0.colStride != 1 } ?? false
                    let wa = Tensor(zeros: [R * e, h]), wb = Tensor(zeros: [2 * inter, R * e])
                    for (ex, m) in b.experts.enumerated() {
                        for (block, l) in [(0, m.gate), (1, m.up)] {
                            guard let a = l as? LoRALinear else { continue }
                            for j in 0..<r { (wa.data + (ex * R + block * r + j) * h).update(from: a.a.data + j * h, count: h) }
                            for o in 0..<inter {
                                let row = interleaved ? 2 * o + block : block * inter + o
                                for j in 0..<r { wb.data[row * (R * e) + (block * r + j) * e + ex] = a.b.data[o * r + j] }
                            }
                        }
                    }
                    add("\(p).mlp.experts" + (hasDown ? ".base_layer" : ""), wa, wb)
                }
                if hasDown {
                    expertKinds.insert("down")
                    let wa = Tensor(zeros: [r * e, inter]), wb = Tensor(zeros: [h, r * e])
                    for (ex, m) in b.experts.enumerated() {
                        guard let a = m.down as? LoRALinear else { continue }
                        for j in 0..<r { (wa.data + (ex * r + j) * inter).update(from: a.a.data + j * inter, count: inter) }
                        for o in 0..<h { for j in 0..<r { wb.data[o * (r * e) + j * e + ex] = a.b.data[o * r + j] } }
                    }
                    add("\(p).mlp.experts", wa, wb)
                }
                if b.router.linear is LoRALinear && !params.contains("\(names.routerModule).weight") { params.append("\(names.routerModule).weight") }
            }
        }
        // Nesting order: the first parameter listed for a module is wrapped first (PEFT's `base_layer`).
        var targetParameters: [String] = []
        if expertKinds.contains("gate_up") { targetParameters.append("mlp.experts.gate_up_proj") }
        if expertKinds.contains("down") { targetParameters.append("mlp.experts.down_proj") }
        targetParameters += params + mlpParams
        var config: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": baseModel,
            "r": s.rank, "lora_alpha": Double(s.alpha), "lora_dropout": targetParameters.isEmpty ? Double(s.dropout) : 0.0,
            "target_modules": modules.sorted(), "target_parameters": targetParameters, "bias": "none", "fan_in_fan_out": false,
            "init_lora_weights": true, "use_rslora": false, "use_dora": false, "inference_mode": true,
            "rank_pattern": expertKinds.contains("gate_up") ? ["gate_up_proj": 2 * s.rank] : [String: Int](),
            "alpha_pattern": expertKinds.contains("gate_up") ? ["gate_up_proj": Double(2 * s.alpha)] : [String: Double](),
        ]
        config["modules_to_save"] = NSNull()
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try AtomicDirectory.write(dir, overwrite: true) { out in
            try SafeTensorsWriter.write(entries, to: out.url("adapter_model.safetensors"))
            try json.write(to: out.url("adapter_config.json"))
        }
    }
}
