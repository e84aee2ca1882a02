import MoECheckpoint

/// Where one logical parameter lives in a checkpoint: a whole tensor, or a part of a fused one (transformers v5's
/// in-memory `experts.gate_up_proj` [E, 2I, H], whose expert e's gate is a block of rows; gpt-oss's [E, H, 2I],
/// whose gate is every other column read as rows), possibly stored as MXFP4 blocks and scales.
public struct TensorLocation: Sendable, Equatable {
    /// Elements of a fused tensor that make up one parameter: element (r, c) of the parameter's [rows, cols] (a
    /// vector's element r) is element `offset + r·rowStride + c·colStride` of the tensor, flattened.
    public struct Part: Sendable, Equatable {
        /// The fused tensor's shape (for MXFP4, its decoded shape: the blocks' leading dimensions and the row length).
        public var fullShape: [Int]
        public var offset: Int
        public var rowStride: Int
        public var colStride: Int
        public init(fullShape: [Int], offset: Int, rowStride: Int, colStride: Int = 1) {
            self.fullShape = fullShape; self.offset = offset; self.rowStride = rowStride; self.colStride = colStride
        }
    }

    /// The checkpoint tensor's name (for MXFP4, the `<x>_blocks` tensor).
    public var name: String
    /// The logical parameter's shape.
    public var shape: [Int]
    public var part: Part?
    /// MXFP4 storage: the `<x>_scales` tensor beside `name`'s blocks.
    public var mxfp4Scales: String?
    /// A parameter that may be absent (biases the config leaves to the file, e.g. `o_proj.bias`).
    public var optional: Bool

    public init(name: String, shape: [Int], part: Part? = nil, mxfp4Scales: String? = nil, optional: Bool = false) {
        self.name = name; self.shape = shape; self.part = part; self.mxfp4Scales = mxfp4Scales; self.optional = optional
    }

    /// Rows `rows` of a fused [E, rows, cols] tensor read as an [E·rows, cols] matrix.
    public init(name: String, shape: [Int], rows: Range<Int>, fusedShape: [Int]) {
        self.init(name: name, shape: shape, part: Part(fullShape: fusedShape, offset: rows.lowerBound * shape[1], rowStride: shape[1]))
    }

    /// Part of a fused tensor (not a whole one).
    public var isFused: Bool { part != nil }
}

/// A family's two-way table between the logical parameter names of `CausalLM.forEachParameter` and the
/// tensor names of its checkpoints, with shapes: the one place names are spelled. The loader reads through
/// it, `synth` writes random checkpoints from it, `inspect`, pruning plans, trained-model and PEFT writers
/// look names up in it. Built for one config and one checkpoint layout (`has` says which tensors exist, so
/// Mixtral's `block_sparse_moe` vs `mlp` and fused vs per-expert experts are told apart).
public struct CheckpointNames: Sendable {
    public private(set) var entries: [(logical: String, location: TensorLocation)] = []
    /// The router's module in a decoder layer as transformers v5 holds it in memory (what PEFT adapters name):
    /// `mlp.gate`, or Phi-MoE's `mlp.router`.
    public var routerModule = "mlp.gate"
    /// Asked of `has` by families whose checkpoints fuse experts, to choose one module per expert (see
    /// `ModelRegistry.checkpointNames(modules:)`).
    public static let perExpertModulesProbe = "moepress.per_expert_modules"
    private var byLogical: [String: Int] = [:]
    private var byName: [String: [Int]] = [:]

    public init() {}

    /// Checkpoint module of each routed expert (per-expert layout) → its logical module.
    private var expertModules: [String: String] = [:]

    public mutating func add(_ logical: String, _ location: TensorLocation) {
        precondition(byLogical[logical] == nil, "\(logical) listed twice")
        byLogical[logical] = entries.count
        byName[location.name, default: []].append(entries.count)
        if let scales = location.mxfp4Scales { byName[scales, default: []].append(entries.count) }
        entries.append((logical, location))
        if logical.hasSuffix(".gate"), logical.contains(".moe.experts."), !location.isFused, location.name.hasSuffix(".weight") {
            let projection = location.name.dropLast(".weight".count)
            if let d = projection.lastIndex(of: ".") { expertModules[String(projection[..<d])] = String(logical.dropLast(".gate".count)) }
        }
    }

    public func location(_ logical: String) -> TensorLocation? { byLogical[logical].map { entries[$0].location } }

    /// The logical parameters a checkpoint tensor holds (several for a fused tensor). Factor and vector
    /// tensors of MoEPress's own formats (`<x>.lowrank_a`, `<expert>.ce_gate`) map through the layer they belong to.
    public func logicalNames(ofTensor name: String) -> [String] {
        if let ids = byName[name] { return ids.map { entries[$0].logical } }
        for suffix in [".lowrank_a", ".lowrank_b"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count)) + ".weight"
            if let ids = byName[base] { return ids.map { entries[$0].logical + suffix } }
        }
        if let d = name.lastIndex(of: "."), name[name.index(after: d)...].hasPrefix("ce_"), let module = expertModules[String(name[..<d])] {
            return [module + name[d...]]
        }
        return []
    }

    /// The checkpoint name of a logical parameter, including suffixes a layer adds to its weight's module
    /// (`.bias`, `.lowrank_a/_b`) and compressed-expert vectors (`layers.L.moe.experts.E.ce_gate` sits in
    /// expert E's module).
    public func checkpointName(_ logical: String) -> String? {
        if let loc = location(logical), !loc.isFused { return loc.name }
        guard let dot = logical.lastIndex(of: ".") else { return nil }
        let base = String(logical[..<dot]), suffix = String(logical[logical.index(after: dot)...])
        if suffix.hasPrefix("ce_"), let gate = location(base + ".gate"), !gate.isFused, gate.name.hasSuffix(".weight") {
            // <expert module>.<gate projection>.weight → <expert module>.ce_gate
            let module = gate.name.dropLast(".weight".count)
            guard let d = module.lastIndex(of: ".") else { return nil }
            return "\(module[..<d]).\(suffix)"
        }
        guard let loc = location(base), !loc.isFused, loc.name.hasSuffix(".weight") else { return nil }
        return String(loc.name.dropLast("weight".count)) + suffix
    }

    /// The module prefix of a logical module whose weight the table lists (`layers.3.moe.router` →
    /// `model.layers.3.block_sparse_moe.gate`).
    public func module(_ logical: String) -> String? {
        guard let loc = location(logical), !loc.isFused, loc.name.hasSuffix(".weight") else { return nil }
        return String(loc.name.dropLast(".weight".count))
    }

    /// Total elements of the tensors the table names (each fused tensor once).
    public var tensorShapes: [(name: String, shape: [Int])] {
        var seen = Set<String>()
        var out: [(String, [Int])] = []
        for (_, loc) in entries where !loc.optional && seen.insert(loc.name).inserted {
            if let scales = loc.mxfp4Scales, let full = loc.part?.fullShape {
                let lead = Array(full.dropLast()), blocks = full.last! / 32
                out.append((loc.name, lead + [blocks, 16]))
                out.append((scales, lead + [blocks]))
            } else {
                out.append((loc.name, loc.part?.fullShape ?? loc.shape))
            }
        }
        return out
    }
}

/// The spellings most families share, as building blocks for their tables.
struct NameTableBuilder {
    var table = CheckpointNames()
    let description: ModelDescription
    let has: (String) -> Bool

    var hidden: Int { description.hiddenSize }

    mutating func tensor(_ logical: String, _ name: String, _ shape: [Int], optional: Bool = false) {
        table.add(logical, TensorLocation(name: name, shape: shape, optional: optional))
    }

    /// `<prefix>.weight` [out, in], and `<prefix>.bias` [out] when `bias` (or, when nil, if the file has one).
    mutating func linear(_ logical: String, _ prefix: String, out: Int, in n: Int, bias: Bool? = false) {
        tensor(logical, "\(prefix).weight", [out, n])
        if bias == true { tensor("\(logical).bias", "\(prefix).bias", [out]) } else if bias == nil || has("\(prefix).bias") {
            tensor("\(logical).bias", "\(prefix).bias", [out], optional: true)
        }
    }

    mutating func norm(_ logical: String, _ prefix: String, _ dim: Int) { tensor(logical, "\(prefix).weight", [dim]) }

    /// A gated MLP: `<prefix>.<gate|up|down>.weight` with the given projection names.
    mutating func mlp(_ logical: String, _ prefix: String, intermediate: Int, names: [String] = ["gate_proj", "up_proj", "down_proj"]) {
        linear("\(logical).gate", "\(prefix).\(names[0])", out: intermediate, in: hidden)
        linear("\(logical).up", "\(prefix).\(names[1])", out: intermediate, in: hidden)
        linear("\(logical).down", "\(prefix).\(names[2])", out: hidden, in: intermediate)
    }

    /// Routed experts under `<prefix>`: per expert (`<prefix>.<e>.<name>.weight`), or fused when the file has
    /// `<prefix>.gate_up_proj` [E, 2I, H] and `<prefix>.down_proj` [E, H, I].
    mutating func experts(_ logical: String, _ prefix: String, count: Int, intermediate i: Int,
                          names: [String] = ["gate_proj", "up_proj", "down_proj"]) {
        let h = hidden
        if has("\(prefix).gate_up_proj") {
            for e in 0..<count {
                table.add("\(logical).\(e).gate", TensorLocation(name: "\(prefix).gate_up_proj", shape: [i, h], rows: (e * 2 * i)..<(e * 2 * i + i),
                                                                fusedShape: [count, 2 * i, h]))
                table.add("\(logical).\(e).up", TensorLocation(name: "\(prefix).gate_up_proj", shape: [i, h], rows: (e * 2 * i + i)..<((e + 1) * 2 * i),
                                                              fusedShape: [count, 2 * i, h]))
                table.add("\(logical).\(e).down", TensorLocation(name: "\(prefix).down_proj", shape: [h, i], rows: (e * h)..<((e + 1) * h),
                                                                fusedShape: [count, h, i]))
            }
            return
        }
        for e in 0..<count { mlp("\(logical).\(e)", "\(prefix).\(e)", intermediate: i, names: names) }
    }

    /// Embedding, final norm and LM head (`headBias`: Phi-MoE's `lm_head_bias`).
    mutating func ends(headBias: Bool = false) {
        tensor("embed", "model.embed_tokens.weight", [description.vocabSize, hidden])
        decoderNorm("norm", "model.norm")
        if !description.tieWordEmbeddings { linear("lm_head", "lm_head", out: description.vocabSize, in: hidden, bias: headBias) }
    }

    /// Grouped-query attention under `<p>.self_attn`: q/k/v/o projections (biases per `bias`; o's only if
    /// present unless `oBias`), and q/k norms of `qNorm`/`kNorm` dims when given.
    mutating func gqa(_ l: Int, bias: Bool?, oBias: Bool? = false, qNorm: Int? = nil, kNorm: Int? = nil) {
        let d = description, a = "model.layers.\(l).self_attn", lg = "layers.\(l).attn"
        linear("\(lg).q", "\(a).q_proj", out: d.heads * d.headDim, in: hidden, bias: bias)
        linear("\(lg).k", "\(a).k_proj", out: d.kvHeads * d.headDim, in: hidden, bias: bias)
        linear("\(lg).v", "\(a).v_proj", out: d.kvHeads * d.headDim, in: hidden, bias: bias)
        linear("\(lg).o", "\(a).o_proj", out: hidden, in: d.heads * d.headDim, bias: oBias)
        if let qNorm { norm("\(lg).q_norm", "\(a).q_norm", qNorm) }
        if let kNorm { norm("\(lg).k_norm", "\(a).k_norm", kNorm) }
    }

    /// A decoder layer's two norms (with `.bias` when the description says LayerNorm).
    mutating func layerNorms(_ l: Int) {
        decoderNorm("layers.\(l).input_norm", "model.layers.\(l).input_layernorm")
        decoderNorm("layers.\(l).post_norm", "model.layers.\(l).post_attention_layernorm")
    }

    mutating func decoderNorm(_ logical: String, _ prefix: String) {
        norm(logical, prefix, hidden)
        if description.layerNorm { tensor("\(logical).bias", "\(prefix).bias", [hidden]) }
    }

    /// A decoder layer's feed-forward part: dense `mlp` or an MoE block under `<moe>` (router `gate`, routed
    /// `experts`, optional `shared` expert module and sigmoid `shared_expert_gate`).
    mutating func feedForward(_ l: Int, moe: String, expertNames: [String] = ["gate_proj", "up_proj", "down_proj"],
                              shared: String = "shared_expert", sharedGate: Bool = false, correctionBias: Bool = false) {
        let layer = description.layers[l], lg = "layers.\(l)"
        guard let e = layer.experts else {
            mlp("\(lg).mlp", "model.layers.\(l).mlp", intermediate: layer.denseIntermediate ?? 0)
            return
        }
        linear("\(lg).moe.router", "\(moe).gate", out: e, in: hidden)
        if correctionBias { tensor("\(lg).moe.router.correction_bias", "\(moe).gate.e_score_correction_bias", [e]) }
        experts("\(lg).moe.experts", "\(moe).experts", count: e, intermediate: layer.expertIntermediate, names: expertNames)
        if let s = layer.sharedExpertIntermediate {
            mlp("\(lg).moe.shared", "\(moe).\(shared)", intermediate: s)
            if sharedGate { linear("\(lg).moe.shared_gate", "\(moe).shared_expert_gate", out: 1, in: hidden) }
        }
    }
}
