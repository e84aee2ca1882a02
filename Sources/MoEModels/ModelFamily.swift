import Foundation
import MoETensor
import MoECheckpoint

/// One supported architecture: how to read its config and where its weights are. Each family lives
/// in its own file under Families/ and is listed once in `ModelRegistry.families`.
public protocol ModelFamily: SendableMetatype {
    /// HF `model_type` values this family reads.
    static var modelTypes: [String] { get }
    static func describe(_ config: HFConfig) throws -> ModelDescription
    static func build(_ config: HFConfig, weights: Checkpoint) throws -> CausalLM
    /// Checkpoint prefix of layer `layer`'s MoE block; its router is `<prefix>.gate.weight` and its routed
    /// experts live under `<prefix>.experts.` in every supported family.
    static func moePrefix(layer: Int, in checkpoint: Checkpoint) -> String
    /// Names of a routed expert's gate, up and down projections in the per-expert layout
    /// (`<prefix>.experts.<e>.<name>.weight`).
    static var expertProjectionNames: ExpertProjectionNames { get }
}

public struct ExpertProjectionNames: Sendable, Equatable {
    public var gate: String, up: String, down: String
    public init(gate: String, up: String, down: String) { (self.gate, self.up, self.down) = (gate, up, down) }
    public static let standard = ExpertProjectionNames(gate: "gate_proj", up: "up_proj", down: "down_proj")
    /// The checkpoint name of projection `kind` ("gate", "up" or "down").
    public subscript(kind: String) -> String {
        switch kind {
        case "gate": gate
        case "up": up
        case "down": down
        default: preconditionFailure("projection kind \(kind)")
        }
    }
}

extension ModelFamily {
    public static func moePrefix(layer: Int, in checkpoint: Checkpoint) -> String { "model.layers.\(layer).mlp" }
    public static var expertProjectionNames: ExpertProjectionNames { .standard }
}

public enum ModelRegistry {
    public static let families: [any ModelFamily.Type] = [
        Mixtral.self, Qwen2MoE.self, Qwen3MoE.self, OLMoE.self, DeepseekV2.self, DeepseekV3.self,
    ]

    public static var supportedModelTypes: [String] { families.flatMap { $0.modelTypes } }

    public static func family(for config: HFConfig) throws -> any ModelFamily.Type {
        let t = try config.modelType
        guard let f = families.first(where: { $0.modelTypes.contains(t) }) else {
            throw ModelError.unsupportedArchitecture(t, supported: supportedModelTypes)
        }
        return f
    }

    public static func family(directory: URL) throws -> any ModelFamily.Type {
        try family(for: HFConfig(modelDirectory: directory))
    }

    public static func describe(directory: URL) throws -> ModelDescription {
        let config = try HFConfig(modelDirectory: directory)
        return try family(for: config).describe(config)
    }

    /// Opens a model folder (config.json + safetensors): weights stay in the files, mapped, in their stored
    /// dtype (norms, biases and compressed-expert vectors, a few vectors per layer, are widened to f32).
    public static func load(directory: URL) throws -> CausalLM {
        let config = try HFConfig(modelDirectory: directory)
        let fam = try family(for: config)
        let weights = try Checkpoint(directory: directory)
        let model = try fam.build(config, weights: weights)
        try attachCompressedExperts(model, config: config, family: fam, weights: weights)
        model.pager = LayerPager(checkpoint: weights, layers: model.layers.count)
        return model
    }

    /// `"moepress": {"compressed_experts": {"main_experts": K}}`: every MoE block gets its experts'
    /// `<prefix>.experts.<e>.ce_gate` [H], `.ce_up` [H] and `.ce_mid` [I] vectors and runs K main experts.
    static func attachCompressedExperts(_ model: CausalLM, config: HFConfig, family: any ModelFamily.Type, weights: Checkpoint) throws {
        guard let ce = config.raw["moepress"]?.object?["compressed_experts"]?.object else { return }
        guard let k = ce["main_experts"]?.int, k >= 1 else { throw ModelError.invalidConfig("\(config.path): moepress.compressed_experts.main_experts must be a positive integer") }
        for l in model.description.moeLayerIndices {
            guard var b = model.layers[l].feedForward.moe else { continue }
            guard k <= b.topK else { throw ModelError.invalidConfig("\(config.path): compressed_experts.main_experts \(k) exceeds top-k \(b.topK)") }
            let p = "\(family.moePrefix(layer: l, in: weights)).experts"
            let h = b.hiddenSize
            func vectors(_ kind: String, _ n: (Int) -> Int) throws -> [Tensor] {
                try (0..<b.numExperts).map { try weights.tensor("\(p).\($0).\(kind)", shape: [n($0)]) }
            }
            b.compressedExperts = CompressedExperts(mainExperts: k, gate: try vectors("ce_gate") { _ in h }, up: try vectors("ce_up") { _ in h },
                                                    mid: try vectors("ce_mid") { b.experts[$0].intermediateSize })
            model.layers[l].feedForward = .moe(b)
        }
    }

    /// The config key that holds the routed expert count in this config.
    public static func expertCountKey(_ config: HFConfig) -> String? {
        ["num_local_experts", "num_experts", "n_routed_experts"].first { config.has($0) }
    }
}

/// Reads tensors by name with shape checks; the helpers every family file builds from. Matrices are views
/// in their stored dtype; vectors (norms, biases) are f32.
struct WeightReader {
    let ckpt: Checkpoint
    let description: ModelDescription

    func tensor(_ name: String, _ shape: [Int]) throws -> Tensor { try ckpt.tensor(name, shape: shape) }

    func matrix(_ name: String, _ rows: Int, _ cols: Int) throws -> WeightMatrix { try ckpt.weight(name, shape: [rows, cols]) }

    func linear(_ prefix: String, out: Int, in inF: Int, bias: Bool = false) throws -> DenseLinear {
        let w = try matrix("\(prefix).weight", out, inF)
        let b = bias ? try ckpt.tensor("\(prefix).bias", shape: [out]) : try ckpt.tensorIfPresent("\(prefix).bias", shape: [out])
        return DenseLinear(weight: w, bias: b)
    }

    func norm(_ prefix: String, _ dim: Int) throws -> RMSNorm {
        RMSNorm(weight: try ckpt.tensor("\(prefix).weight", shape: [dim]), eps: description.rmsNormEps)
    }

    /// A dense weight, or its low-rank factors (`<prefix>.lowrank_a` [out, r], `<prefix>.lowrank_b` [r, in]).
    func denseOrLowRank(_ prefix: String, out: Int, in inF: Int) throws -> any LinearLayer {
        if ckpt.contains("\(prefix).lowrank_a") {
            guard let ia = ckpt.info("\(prefix).lowrank_a"), ia.shape.count == 2, ia.shape[0] == out else {
                throw CheckpointError(file: ckpt.directory.path, tensor: "\(prefix).lowrank_a", "should be [\(out), r]")
            }
            let r = ia.shape[1]
            return LowRankLinear(a: try tensor("\(prefix).lowrank_a", [out, r]), b: try tensor("\(prefix).lowrank_b", [r, inF]))
        }
        return try linear(prefix, out: out, in: inF)
    }

    /// A gated MLP stored as three linears named `names` under `prefix` (each dense or low-rank).
    func mlp(_ prefix: String, intermediate: Int, names: ExpertProjectionNames = .standard) throws -> GatedMLP {
        let h = description.hiddenSize
        return GatedMLP(
            gate: try denseOrLowRank("\(prefix).\(names.gate)", out: intermediate, in: h),
            up: try denseOrLowRank("\(prefix).\(names.up)", out: intermediate, in: h),
            down: try denseOrLowRank("\(prefix).\(names.down)", out: h, in: intermediate),
            activation: description.activation)
    }

    /// Routed experts under `prefix` (e.g. "model.layers.3.mlp.experts"), either one module per expert
    /// (`<prefix>.<e>.<gate|up|down>.weight`, the transformers v4 layout and what v5 saves) or fused
    /// (`<prefix>.gate_up_proj` [E, 2I, H] and `<prefix>.down_proj` [E, H, I], v5's in-memory layout; each
    /// expert's projections are views of rows of the fused tensors).
    func experts(_ prefix: String, count: Int, intermediate: Int,
                 names: ExpertProjectionNames = .standard) throws -> [GatedMLP] {
        let h = description.hiddenSize
        if ckpt.contains("\(prefix).gate_up_proj") {
            let gu = try fused("\(prefix).gate_up_proj", [count, 2 * intermediate, h])
            let dn = try fused("\(prefix).down_proj", [count, h, intermediate])
            return (0..<count).map { e in
                let base = gu.rowSlice((e * 2 * intermediate)..<((e + 1) * 2 * intermediate))
                return GatedMLP(
                    gate: DenseLinear(weight: base.rowSlice(0..<intermediate)),
                    up: DenseLinear(weight: base.rowSlice(intermediate..<(2 * intermediate))),
                    down: DenseLinear(weight: dn.rowSlice((e * h)..<((e + 1) * h))),
                    activation: description.activation)
            }
        }
        return try (0..<count).map { e in try mlp("\(prefix).\(e)", intermediate: intermediate, names: names) }
    }

    /// A 3-D tensor [E, rows, cols] as one matrix [E·rows, cols], in its stored dtype.
    func fused(_ name: String, _ shape: [Int]) throws -> WeightMatrix {
        guard let info = ckpt.info(name) else { throw CheckpointError(file: ckpt.directory.path, tensor: name, "missing from the checkpoint") }
        guard info.shape == shape else { throw CheckpointError(file: ckpt.directory.path, tensor: name, "shape \(info.shape), expected \(shape)") }
        guard let loc = ckpt.location(of: name) else { throw CheckpointError(file: ckpt.directory.path, tensor: name, "missing from the checkpoint") }
        switch info.dtype {
        case .bf16, .f16:
            return WeightMatrix(viewing: loc.file.mapping.base + loc.offset, dtype: info.dtype, rows: shape[0] * shape[1], cols: shape[2],
                                owner: loc.file.mapping)
        default:
            return WeightMatrix(try ckpt.tensor(name).reshaped([shape[0] * shape[1], shape[2]]))
        }
    }

    func lmHead() throws -> any LinearLayer {
        if !description.tieWordEmbeddings {
            return try linear("lm_head", out: description.vocabSize, in: description.hiddenSize)
        }
        return DenseLinear(weight: try embedding())
    }

    func embedding() throws -> WeightMatrix {
        try matrix("model.embed_tokens.weight", description.vocabSize, description.hiddenSize)
    }

    /// The router of an MoE block: `<prefix>.gate.weight` [experts, hidden].
    func router(_ prefix: String, experts: Int, correctionBias: Tensor? = nil) throws -> Router {
        Router(linear: DenseLinear(weight: try matrix("\(prefix).gate.weight", experts, description.hiddenSize)),
               correctionBias: correctionBias, routing: description.routing!)
    }
}

extension HFConfig {
    /// Fields every supported family shares, in either transformers spelling.
    func baseDescription(architectureFallback: String, routing: Routing?, layers: [ModelDescription.Layer],
                         attention: ModelDescription.AttentionKind = .groupedQuery, headDim explicitHeadDim: Int? = nil) throws -> ModelDescription {
        let hidden = try int("hidden_size")
        let heads = try int("num_attention_heads")
        guard heads > 0, hidden > 0 else { throw ModelError.invalidConfig("\(path): hidden_size and num_attention_heads must be positive") }
        let arch = try stringList("architectures")?.first ?? architectureFallback
        var d = ModelDescription(
            modelType: try modelType,
            architecture: arch,
            vocabSize: try int("vocab_size"),
            hiddenSize: hidden,
            heads: heads,
            kvHeads: try int("num_key_value_heads", default: heads),
            headDim: try explicitHeadDim ?? optionalInt("head_dim") ?? hidden / heads,
            attention: attention,
            maxPositions: try int("max_position_embeddings", default: 4096),
            tieWordEmbeddings: try bool("tie_word_embeddings", default: false),
            activation: try Activation(hfName: string("hidden_act", default: "silu")),
            rmsNormEps: Float(try double("rms_norm_eps", default: 1e-6)),
            routing: routing,
            layers: layers,
            bosTokenIDs: tokenIDs("bos_token_id"),
            eosTokenIDs: tokenIDs("eos_token_id"))
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
    /// (`"moepress": {"experts_per_layer": [...]}`, null for dense layers), applied over the family's plan.
    func applyExpertCounts(_ d: inout ModelDescription) throws {
        guard let counts = raw["moepress"]?.object?["experts_per_layer"]?.array else { return }
        guard counts.count == d.numLayers else {
            throw ModelError.invalidConfig("\(path): moepress.experts_per_layer has \(counts.count) entries for \(d.numLayers) layers")
        }
        for (i, c) in counts.enumerated() {
            guard let n = c.int else { continue }
            guard d.layers[i].isMoE else { throw ModelError.invalidConfig("\(path): moepress.experts_per_layer[\(i)] set for a dense layer") }
            d.layers[i].experts = n
        }
    }

    /// Routed expert count in any spelling.
    var routedExperts: Int { get throws { try int(anyOf: ["num_local_experts", "num_experts", "n_routed_experts"]) } }
}

/// The standard pre-norm decoder stack with grouped-query attention, shared by Mixtral, Qwen and OLMoE.
func buildGQAModel(
    _ d: ModelDescription, _ config: HFConfig, _ w: WeightReader,
    attention makeAttention: (Int, String) throws -> any AttentionLayer,
    feedForward makeFFN: (Int, String) throws -> FeedForward
) throws -> CausalLM {
    var layers: [DecoderLayer] = []
    for i in 0..<d.numLayers {
        let p = "model.layers.\(i)"
        layers.append(DecoderLayer(
            inputNorm: try w.norm("\(p).input_layernorm", d.hiddenSize),
            attention: try makeAttention(i, p),
            postAttentionNorm: try w.norm("\(p).post_attention_layernorm", d.hiddenSize),
            feedForward: try makeFFN(i, p)))
    }
    return CausalLM(description: d, embedding: try w.embedding(), layers: layers,
                    norm: try w.norm("model.norm", d.hiddenSize), lmHead: try w.lmHead())
}

/// q/k/v/o attention under `prefix.self_attn`.
func standardAttention(_ d: ModelDescription, _ w: WeightReader, prefix: String, rope: RoPE, bias: Bool,
                       qkNorm: GroupedQueryAttention.QKNorm = .none, clip: Float? = nil, slidingWindow: Int? = nil) throws -> GroupedQueryAttention {
    let a = "\(prefix).self_attn"
    let h = d.hiddenSize, hd = d.headDim
    return GroupedQueryAttention(
        q: try w.linear("\(a).q_proj", out: d.heads * hd, in: h, bias: bias),
        k: try w.linear("\(a).k_proj", out: d.kvHeads * hd, in: h, bias: bias),
        v: try w.linear("\(a).v_proj", out: d.kvHeads * hd, in: h, bias: bias),
        o: try w.linear("\(a).o_proj", out: h, in: d.heads * hd),
        heads: d.heads, kvHeads: d.kvHeads, headDim: hd, rope: rope, qkNorm: qkNorm, clip: clip,
        slidingWindow: slidingWindow)
}
