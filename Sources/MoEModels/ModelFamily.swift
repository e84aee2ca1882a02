import Foundation
import MoETensor
import MoECheckpoint

/// One supported architecture: how to read its config and where its weights are. Each family lives
/// in its own file under Families/ and is listed once in `ModelRegistry.families`.
public protocol ModelFamily: SendableMetatype {
    /// HF `model_type` values this family reads.
    static var modelTypes: [String] { get }
    static func describe(_ config: HFConfig) throws -> ModelDescription
    /// The family's checkpoint-name table for this config, in the layout `has` reveals (a checkpoint's
    /// tensor names; with none, the layout `save_pretrained` writes).
    static func checkpointNames(_ config: HFConfig, description: ModelDescription, has: @escaping (String) -> Bool) throws -> CheckpointNames
    /// What attention reads from config.json besides the description (RoPE, sliding windows, q/k/v clipping):
    /// checked by `ModelRegistry.describe` for every command, used by `build`.
    static func attention(_ config: HFConfig, description: ModelDescription) throws -> AttentionConfig
    /// Builds the model, reading every weight through `names`.
    static func build(_ config: HFConfig, description: ModelDescription, weights: WeightReader) throws -> CausalLM
    /// transformers' defaults for keys a config.json may leave out; `ModelRegistry.resolve` fills them in
    /// before the three functions above read the config.
    static var hfDefaults: [String: JSONValue] { get }
}

public enum ModelRegistry {
    public static let families: [any ModelFamily.Type] = [
        Mixtral.self, Qwen2MoE.self, Qwen3MoE.self, OLMoE.self, DeepseekV2.self, DeepseekV3.self, PhiMoE.self, GptOss.self,
    ]

    public static var supportedModelTypes: [String] { families.flatMap { $0.modelTypes } }

    public static func family(for config: HFConfig) throws -> any ModelFamily.Type {
        let t = try config.modelType
        guard let f = families.first(where: { $0.modelTypes.contains(t) }) else {
            throw ModelError.unsupportedArchitecture(t, supported: supportedModelTypes, file: config.path)
        }
        return f
    }

    /// The config's family and the config with that family's transformers defaults for the keys it leaves out:
    /// what every caller of `describe`, `checkpointNames` and `build` passes them.
    static func resolve(_ config: HFConfig) throws -> (family: any ModelFamily.Type, config: HFConfig) {
        let f = try family(for: config)
        return (f, config.filling(f.hfDefaults))
    }

    public static func family(directory: URL) throws -> any ModelFamily.Type {
        try family(for: HFConfig(modelDirectory: directory))
    }

    /// A config read and checked as a whole: its family, the config with that family's defaults, and its
    /// description.
    public struct Described {
        public let family: any ModelFamily.Type
        public let config: HFConfig
        public let description: ModelDescription

        /// Each layer's sliding window (nil: full attention), as the family reads it.
        public func attentionWindows() throws -> [Int?] { try family.attention(config, description: description).windows }
    }

    /// The one validation of a config.json that every command runs, whatever it then reads: the family's
    /// description, its attention settings (RoPE, sliding windows), its name table, and the "moepress" section. `inspect`
    /// refuses what `logits` refuses.
    public static func describe(_ config: HFConfig) throws -> Described {
        let (fam, filled) = try resolve(config)
        let d = try fam.describe(filled)
        _ = try fam.attention(filled, description: d)
        // The name table reads the keys that only shape tensors (DeepSeek's latent ranks, OLMoE's attention_bias).
        _ = try fam.checkpointNames(filled, description: d, has: { _ in false })
        try MoEPressSection.validate(config, description: d)
        return Described(family: fam, config: filled, description: d)
    }

    public static func describe(directory: URL) throws -> ModelDescription {
        try describe(HFConfig(modelDirectory: directory)).description
    }

    /// Opens a model folder (config.json + safetensors): weights stay in the files, mapped, in their stored
    /// dtype (norms, biases and compressed-expert vectors, a few vectors per layer, are widened to f32).
    public static func load(directory: URL) throws -> CausalLM {
        let config = try HFConfig(modelDirectory: directory)
        let described = try describe(config)
        let (fam, filled, d) = (described.family, described.config, described.description)
        let weights = try Checkpoint(directory: directory)
        let names = try fam.checkpointNames(filled, description: d, has: weights.contains)
        // `--check-weights` (any command): scan every weight for NaN/Inf before computing with them.
        if ProcessInfo.processInfo.environment["MOEPRESS_CHECK_WEIGHTS"] == "1" {
            try weights.requireFinite()
            ResourceMonitor.shared.count("weights_checked", weights.names.count)
        }
        let model = try fam.build(filled, description: d, weights: WeightReader(ckpt: weights, description: d, names: names))
        try attachCompressedExperts(model, config: config, names: names, weights: weights)
        // Tensors no part of the model reads are reported, never silently ignored (HF warns of them too). Inside a
        // decoder layer the model runs, one is refused: weights the config does not describe (a shared expert whose
        // size is 0 or left out) would change what the model computes if they were meant to be there.
        let unused = weights.names.filter { names.logicalNames(ofTensor: $0).isEmpty }
        if let stray = unused.first(where: { Self.insideRunLayer($0, layers: d.numLayers) }) {
            throw CheckpointError(file: directory.path, tensor: stray,
                                  "is in the files but config.json describes no such part of layer \(Self.layerIndex(stray) ?? 0) " +
                                  "(a shared expert of size 0 or missing from the config?); \(unused.count) tensor(s) would go unused")
        }
        if !unused.isEmpty {
            Console.note("note: \(directory.path): \(unused.count) tensor(s) in the files are not used by \(try config.modelType): " +
                         unused.prefix(3).joined(separator: ", ") + (unused.count > 3 ? ", …" : ""))
        }
        model.pager = LayerPager(checkpoint: weights, layers: model.layers.count)
        return model
    }

    /// The checkpoint-name table of a model folder, for its config and its files' layout; with `perExpert`,
    /// the layout MoEPress writes whole weights in: one module per expert even where the files fuse experts
    /// (gpt-oss, whose HF class has only fused experts, stays fused), never quantised. `modules` asks for one
    /// module per expert in every family (MoEPress's own layout for gpt-oss, which low-rank factors and
    /// compressed-expert vectors need and `modeling_moepress.py` loads).
    public static func checkpointNames(directory: URL, checkpoint: Checkpoint, perExpert: Bool = false, modules: Bool = false) throws -> CheckpointNames {
        let described = try describe(HFConfig(modelDirectory: directory))
        let (fam, filled) = (described.family, described.config)
        let perExpert = perExpert || modules
        let has: (String) -> Bool = { name in
            if modules && name == CheckpointNames.perExpertModulesProbe { return true }
            if perExpert && (name.hasSuffix(".gate_up_proj") || name.hasSuffix("_blocks")) { return false }
            return checkpoint.contains(name)
        }
        return try fam.checkpointNames(filled, description: described.description, has: has)
    }

    /// `"moepress": {"compressed_experts": {"main_experts": K}}`: every MoE block gets its experts'
    /// `<prefix>.experts.<e>.ce_gate` [H], `.ce_up` [H] and `.ce_mid` [I] vectors and runs K main experts.
    static func attachCompressedExperts(_ model: CausalLM, config: HFConfig, names: CheckpointNames, weights: Checkpoint) throws {
        guard let k = try MoEPressSection.mainExperts(config) else { return }
        for l in model.description.moeLayerIndices {
            guard var b = model.layers[l].feedForward.moe else { continue }
            let h = b.hiddenSize
            func vectors(_ kind: String, _ n: (Int) -> Int) throws -> [Tensor] {
                try (0..<b.numExperts).map { e in
                    let logical = "layers.\(l).moe.experts.\(e).\(kind)"
                    guard let name = names.checkpointName(logical) else { throw ModelError.invalidConfig("\(config.path): no checkpoint name for \(logical)") }
                    return try weights.tensor(name, shape: [n(e)])
                }
            }
            b.compressedExperts = CompressedExperts(mainExperts: k, gate: try vectors("ce_gate") { _ in h }, up: try vectors("ce_up") { _ in h },
                                                    mid: try vectors("ce_mid") { b.experts[$0].intermediateSize })
            model.layers[l].feedForward = .moe(b)
        }
    }

    /// `model.layers.<l>.…` with l below `layers` (rotary `inv_freq` buffers, which old checkpoints carry, aside).
    static func insideRunLayer(_ name: String, layers: Int) -> Bool {
        guard !name.hasSuffix("inv_freq"), let l = layerIndex(name) else { return false }
        return l < layers
    }

    static func layerIndex(_ name: String) -> Int? {
        guard let r = name.range(of: "layers.") else { return nil }
        return Int(name[r.upperBound...].prefix { $0.isNumber })
    }

    /// The config key that holds the routed expert count in this config.
    public static func expertCountKey(_ config: HFConfig) -> String? {
        ["num_local_experts", "num_experts", "n_routed_experts"].first { config.has($0) }
    }
}

/// Reads a model's weights by logical name through its family's `CheckpointNames`, with shape checks.
/// Matrices are views in their stored dtype; vectors (norms, biases) are f32.
public struct WeightReader {
    public let ckpt: Checkpoint
    public let description: ModelDescription
    public let names: CheckpointNames

    public init(ckpt: Checkpoint, description: ModelDescription, names: CheckpointNames) {
        self.ckpt = ckpt; self.description = description; self.names = names
    }

    func location(_ logical: String) throws -> TensorLocation {
        guard let loc = names.location(logical) else { throw ModelError.invalidConfig("\(ckpt.directory.path): the family has no tensor \(logical)") }
        return loc
    }

    /// Whether the table lists `logical` and (when optional) the file has it.
    func present(_ logical: String) -> Bool {
        guard let loc = names.location(logical) else { return false }
        return !loc.optional || ckpt.contains(loc.name)
    }

    public func matrix(_ logical: String) throws -> WeightMatrix {
        let loc = try location(logical)
        guard let p = loc.part else { return try ckpt.weight(loc.name, shape: loc.shape) }
        // A fused tensor reads as [all leading dimensions, last]; the parameter is a strided view of its elements.
        let whole = try loc.mxfp4Scales.map { try ckpt.mxfp4Weight(blocks: loc.name, scales: $0, leading: Array(p.fullShape.dropLast()), cols: p.fullShape.last!) }
            ?? ckpt.weight(loc.name, shape: p.fullShape)
        return whole.view(offset: p.offset, rows: loc.shape[0], cols: loc.shape[1], rowStride: p.rowStride, colStride: p.colStride)
    }

    public func vector(_ logical: String) throws -> Tensor {
        let loc = try location(logical)
        guard let p = loc.part else { return try ckpt.tensor(loc.name, shape: loc.shape) }
        let whole = try ckpt.tensor(loc.name, shape: p.fullShape)
        let v = Tensor(zeros: loc.shape)
        for i in 0..<v.count { v.data[i] = whole.data[p.offset + i * p.rowStride] }
        return v
    }

    func optionalVector(_ logical: String) throws -> Tensor? { present(logical) ? try vector(logical) : nil }

    /// A dense weight (and its bias when present), or low-rank factors (`<name>.lowrank_a` [out, r],
    /// `<name>.lowrank_b` [r, in]) where the checkpoint has them instead.
    public func linear(_ logical: String) throws -> any LinearLayer {
        let loc = try location(logical)
        if !loc.isFused, loc.name.hasSuffix(".weight") {
            let base = String(loc.name.dropLast(".weight".count))
            if ckpt.contains("\(base).lowrank_a") {
                let out = loc.shape[0], inF = loc.shape[1]
                guard let ia = ckpt.info("\(base).lowrank_a"), ia.shape.count == 2, ia.shape[0] == out else {
                    throw CheckpointError(file: ckpt.directory.path, tensor: "\(base).lowrank_a", "should be [\(out), r]")
                }
                let r = ia.shape[1]
                return LowRankLinear(a: try ckpt.weight("\(base).lowrank_a", shape: [out, r]), b: try ckpt.weight("\(base).lowrank_b", shape: [r, inF]),
                                     bias: try optionalVector("\(logical).bias"))
            }
        }
        return DenseLinear(weight: try matrix(logical), bias: try optionalVector("\(logical).bias"))
    }

    /// A decoder layer's or the final norm: LayerNorm (`<logical>` and `<logical>.bias`) when the description says so.
    public func norm(_ logical: String) throws -> Norm {
        description.layerNorm ? .layer(weight: try vector(logical), bias: try vector("\(logical).bias"), eps: description.rmsNormEps)
            : .rms(try rmsNorm(logical))
    }

    /// An RMSNorm inside attention (q/k norms, DeepSeek's latent norms).
    public func rmsNorm(_ logical: String) throws -> RMSNorm { RMSNorm(weight: try vector(logical), eps: description.rmsNormEps) }

    public func optionalRMSNorm(_ logical: String) throws -> RMSNorm? { present(logical) ? try rmsNorm(logical) : nil }

    /// A gated MLP: `<logical>.gate`, `.up`, `.down`.
    public func mlp(_ logical: String) throws -> GatedMLP {
        GatedMLP(gate: try linear("\(logical).gate"), up: try linear("\(logical).up"), down: try linear("\(logical).down"),
                 activation: description.activation)
    }

    /// `count` routed experts `<logical>.<e>`.
    public func experts(_ logical: String, count: Int) throws -> [GatedMLP] { try (0..<count).map { try mlp("\(logical).\($0)") } }

    public func lmHead() throws -> any LinearLayer {
        description.tieWordEmbeddings ? DenseLinear(weight: try embedding()) : try linear("lm_head")
    }

    public func embedding() throws -> WeightMatrix { try matrix("embed") }

    /// Layer `l`'s router (`layers.L.moe.router`, with its correction bias when the table has one).
    public func router(layer l: Int) throws -> Router {
        Router(linear: try linear("layers.\(l).moe.router"), correctionBias: try optionalVector("layers.\(l).moe.router.correction_bias"),
               routing: description.routing!)
    }

    /// Layer `l`'s MoE block: router, routed experts, shared expert and its gate when the table has them.
    public func moe(layer l: Int) throws -> MoEBlock {
        let e = description.layers[l].experts!
        let p = "layers.\(l).moe"
        return MoEBlock(router: try router(layer: l), experts: try experts("\(p).experts", count: e),
                        sharedExpert: present("\(p).shared.gate") ? try mlp("\(p).shared") : nil,
                        sharedExpertGate: present("\(p).shared_gate") ? try linear("\(p).shared_gate") : nil)
    }

    /// Layer `l`'s feed-forward part: its MoE block, or its dense MLP.
    public func feedForward(layer l: Int) throws -> FeedForward {
        description.layers[l].isMoE ? .moe(try moe(layer: l)) : .dense(try mlp("layers.\(l).mlp"))
    }
}

extension HFConfig {
    /// Fields every supported family shares, in either transformers spelling.
    func baseDescription(architectureFallback: String, routing: Routing?, layers: [ModelDescription.Layer],
                         attention: ModelDescription.AttentionKind = .groupedQuery, headDim explicitHeadDim: Int? = nil) throws -> ModelDescription {
        let hidden = try size("hidden_size")
        let heads = try size("num_attention_heads", max: 1 << 16)
        let kvHeads = try size("num_key_value_heads", default: heads, max: 1 << 16)
        guard heads % kvHeads == 0 else { throw ModelError.invalidConfig("\(path): num_attention_heads \(heads) is not a multiple of num_key_value_heads \(kvHeads)") }
        let headDim = try explicitHeadDim ?? optionalSize("head_dim") ?? hidden / heads
        guard headDim >= 1 else { throw ModelError.invalidConfig("\(path): hidden_size \(hidden) gives no dimension per head for \(heads) heads") }
        guard headDim % 2 == 0 else { throw ModelError.invalidConfig("\(path): the head dimension \(headDim) is odd; RoPE rotates pairs") }
        let vocab = try size("vocab_size")
        let arch = try stringList("architectures")?.first ?? architectureFallback
        for (i, l) in layers.enumerated() {
            for (k, v) in [("expert intermediate size", l.isMoE ? l.expertIntermediate : 1), ("intermediate_size", l.denseIntermediate ?? 1),
                           ("shared expert intermediate size", l.sharedExpertIntermediate ?? 1), ("experts", l.experts ?? 1)] where v < 1 || v > 1 << 24 {
                throw ModelError.invalidConfig("\(path): layer \(i) has \(k) \(v); it should be from 1 to \(1 << 24)")
            }
        }
        if let r = routing {
            guard r.topK >= 1 else { throw ModelError.invalidConfig("\(path): num_experts_per_tok is \(r.topK); it should be at least 1") }
            guard r.groups >= 1, r.topKGroups >= 1, r.topKGroups <= r.groups else {
                throw ModelError.invalidConfig("\(path): n_group \(r.groups) and topk_group \(r.topKGroups) should satisfy 1 ≤ topk_group ≤ n_group")
            }
            guard r.scalingFactor.isFinite, r.scalingFactor > 0 else { throw ModelError.invalidConfig("\(path): routed_scaling_factor should be a finite number > 0") }
        }
        /// hidden_act, refused with the file and key named.
        func activation() throws -> Activation {
            do { return try Activation(hfName: string("hidden_act", default: "silu")) } catch let e as TensorError {
                throw ModelError.invalidConfig("\(path): \(e)")
            }
        }
        var d = ModelDescription(
            modelType: try modelType,
            architecture: arch,
            vocabSize: vocab,
            hiddenSize: hidden,
            heads: heads,
            kvHeads: kvHeads,
            headDim: headDim,
            attention: attention,
            maxPositions: try size("max_position_embeddings", default: 4096),
            tieWordEmbeddings: try bool("tie_word_embeddings", default: false),
            activation: try activation(),
            rmsNormEps: Float(try positive("rms_norm_eps", default: 1e-6)),
            routing: routing,
            layers: layers,
            bosTokenIDs: try tokenIDs("bos_token_id"),
            eosTokenIDs: try tokenIDs("eos_token_id"))
        try applyExpertCounts(&d)
        if let r = routing {
            for (i, l) in d.layers.enumerated() {
                if let e = l.experts, e < r.topK {
                    throw ModelError.invalidConfig("\(path): layer \(i) has \(e) experts, fewer than top-k = \(r.topK)")
                }
                if let e = l.experts, r.groups > 1, e % r.groups != 0 {
                    throw ModelError.invalidConfig("\(path): layer \(i) has \(e) experts, not divisible into n_group = \(r.groups) groups")
                }
            }
        }
        return d
    }

    /// Per-layer routed expert counts written by MoEPress for non-uniform pruning
    /// (`"moepress": {"experts_per_layer": [...]}`, null for dense layers), applied over the family's plan
    /// (`MoEPressSection.validate` has checked each entry).
    func applyExpertCounts(_ d: inout ModelDescription) throws {
        guard let counts = try MoEPressSection.expertsPerLayer(self, layers: d.layers.map(\.isMoE)) else { return }
        for (i, c) in counts.enumerated() { if let n = c { d.layers[i].experts = n } }
    }

    /// Routed expert count in any spelling.
    var routedExperts: Int {
        get throws {
            guard let key = ["num_local_experts", "num_experts", "n_routed_experts"].first(where: has) else {
                throw CheckpointError(file: path, "none of the keys \"num_local_experts\", \"num_experts\", \"n_routed_experts\" is present")
            }
            return try size(key, max: 1 << 16)
        }
    }

    /// The decoder layer count.
    var layerCount: Int { get throws { try size("num_hidden_layers", max: 100_000) } }
}

/// The pre-norm decoder stack every family shares: embedding, layers (norms from the table, attention from
/// the family), final norm and head.
func buildModel(_ d: ModelDescription, _ w: WeightReader, attention makeAttention: (Int) throws -> any AttentionLayer) throws -> CausalLM {
    var layers: [DecoderLayer] = []
    for i in 0..<d.numLayers {
        layers.append(DecoderLayer(
            inputNorm: try w.norm("layers.\(i).input_norm"),
            attention: try makeAttention(i),
            postAttentionNorm: try w.norm("layers.\(i).post_norm"),
            feedForward: try w.feedForward(layer: i)))
    }
    return CausalLM(description: d, embedding: try w.embedding(), layers: layers, norm: try w.norm("norm"), lmHead: try w.lmHead())
}

/// Grouped-query attention of layer `l` (q/k/v/o and, when the table has them, q/k norms of `normKind`).
func standardAttention(_ d: ModelDescription, _ w: WeightReader, layer l: Int, rope: RoPE, normKind: GroupedQueryAttention.NormKind = .perHead,
                       clip: Float? = nil, slidingWindow: Int? = nil) throws -> GroupedQueryAttention {
    let a = "layers.\(l).attn"
    var qkNorm = GroupedQueryAttention.QKNorm.none
    if let qn = try w.optionalRMSNorm("\(a).q_norm"), let kn = try w.optionalRMSNorm("\(a).k_norm") {
        qkNorm = normKind == .perHead ? .perHead(q: qn, k: kn) : .full(q: qn, k: kn)
    }
    return GroupedQueryAttention(
        q: try w.linear("\(a).q"), k: try w.linear("\(a).k"), v: try w.linear("\(a).v"), o: try w.linear("\(a).o"),
        heads: d.heads, kvHeads: d.kvHeads, headDim: d.headDim, rope: rope, qkNorm: qkNorm, clip: clip,
        slidingWindow: slidingWindow, sinks: try w.optionalVector("\(a).sinks"))
}
