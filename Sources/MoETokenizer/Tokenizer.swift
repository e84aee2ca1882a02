import MoEJSON
import Foundation

/// A Hugging Face `tokenizer.json`: added tokens, normalizer, pre-tokenizer, BPE model, post-processor,
/// decoder, with the semantics of HF `tokenizers` (ids identical; tests compare against it). Thread-safe.
public final class Tokenizer: @unchecked Sendable {
    public let source: String
    let normalizer: (any Normalizer)?
    let preTokenizer: (any PreTokenizer)?
    let model: BPE
    let postProcessor: any PostProcessor
    let decoder: (any TokenDecoder)?
    public let addedTokens: [AddedToken]
    let addedByID: [Int: AddedToken]
    let addedByContent: [String: Int]
    let rawMatcher: AddedTokenMatcher
    let normalizedMatcher: AddedTokenMatcher

    public convenience init(contentsOf url: URL) throws {
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw TokenizerError(file: url.path, "cannot read the tokenizer file")
        }
        try self.init(data: data, source: url.path)
    }

    /// The tokenizer of a model folder (its tokenizer.json).
    public convenience init(modelDirectory: URL) throws {
        try self.init(contentsOf: modelDirectory.appendingPathComponent("tokenizer.json"))
    }

    public init(data: Data, source: String) throws {
        self.source = source
        let json: JSON
        do { json = try JSON.parse([UInt8](data)) } catch {
            throw TokenizerError(file: source, "is not valid JSON (\(error))")
        }
        guard case .object = json else { throw TokenizerError(file: source, "is not a JSON object") }
        let root = JSONNode(value: json, path: "$", file: source)

        let m = root["model"]
        guard !m.isNull else { throw root.fail("has no \"model\"") }
        let modelType = m["type"].stringValue ?? (m["merges"].isNull ? "?" : "BPE")
        guard modelType == "BPE" else {
            throw m.fail("unsupported model \"\(modelType)\" (supported: BPE)")
        }
        model = try BPE(m)
        try Self.checkTruncationAndPadding(root)
        normalizer = try makeNormalizer(root["normalizer"])
        preTokenizer = try makePreTokenizer(root["pre_tokenizer"])
        decoder = try makeDecoder(root["decoder"])

        var added: [AddedToken] = []
        if !root["added_tokens"].isNull {
            for t in try root["added_tokens"].array() {
                // HF reads ids as u32: a negative or larger id is refused there too.
                let id = try t["id"].int()
                guard id >= 0 && id <= Int(UInt32.max) else { throw t["id"].fail("should be a token id in 0…\(UInt32.max), got \(id)") }
                added.append(AddedToken(
                    id: id, content: try t["content"].string(),
                    singleWord: try t["single_word"].bool(default: false), lstrip: try t["lstrip"].bool(default: false),
                    rstrip: try t["rstrip"].bool(default: false), normalized: try t["normalized"].bool(default: true),
                    special: try t["special"].bool(default: false)))
            }
        }
        addedTokens = added
        addedByID = Dictionary(added.map { ($0.id, $0) }, uniquingKeysWith: { _, b in b })
        addedByContent = Dictionary(added.map { ($0.content, $0.id) }, uniquingKeysWith: { _, b in b })
        // HF matches special tokens first, then the others, each in file order; we keep file order with
        // specials first so equal-length ties resolve the same way.
        let ordered = added.filter(\.special) + added.filter { !$0.special }
        let raw = ordered.filter { !$0.normalized }
        let norm = ordered.filter(\.normalized)
        let normalizer = self.normalizer
        rawMatcher = AddedTokenMatcher(tokens: raw, patterns: raw.map(\.content))
        normalizedMatcher = AddedTokenMatcher(tokens: norm, patterns: try norm.map { try normalizer?.normalize($0.content) ?? $0.content })
        let bpe = model, byContent = addedByContent
        postProcessor = try makePostProcessor(root["post_processor"], tokenID: { byContent[$0] ?? bpe.id(forToken: $0).map(Int.init) })
    }

    /// `truncation` and `padding` are checked as HF tokenizers reads them (a negative length or an unknown strategy is
    /// refused there, so here too; fields it does not know are ignored there, so here too). Valid settings are not applied: transformers sets both on every call (off unless
    /// the caller asks), and MoEPress's commands cut text into windows themselves, so whole files are never truncated.
    static func checkTruncationAndPadding(_ root: JSONNode) throws {
        let t = root["truncation"]
        if !t.isNull {
            guard t.members != nil else { throw t.fail("should be an object or null") }
            _ = try t["max_length"].unsigned(max: Int.max)
            if !t["stride"].isNull { _ = try t["stride"].unsigned(max: Int.max) }
            if !t["strategy"].isNull { _ = try t["strategy"].oneOf(["LongestFirst", "OnlyFirst", "OnlySecond"]) }
            if !t["direction"].isNull { _ = try t["direction"].oneOf(["Left", "Right"]) }
        }
        let p = root["padding"]
        if !p.isNull {
            guard p.members != nil else { throw p.fail("should be an object or null") }
            let strategy = p["strategy"]
            if strategy.stringValue != nil {
                _ = try strategy.oneOf(["BatchLongest"])
            } else if !strategy.isNull {
                guard strategy.members != nil else { throw strategy.fail("should be \"BatchLongest\" or {\"Fixed\": N}") }
                _ = try strategy["Fixed"].unsigned(max: Int.max)
            }
            if !p["direction"].isNull { _ = try p["direction"].oneOf(["Left", "Right"]) }
            if !p["pad_to_multiple_of"].isNull { _ = try p["pad_to_multiple_of"].unsigned(max: Int.max) }
            for k in ["pad_id", "pad_type_id"] where !p[k].isNull { _ = try p[k].unsigned() }
            if !p["pad_token"].isNull { _ = try p["pad_token"].string() }
        }
    }

    /// Largest id + 1 over the model vocabulary and the added tokens.
    public var vocabSize: Int { max(model.vocabSize, (addedTokens.map(\.id).max() ?? -1) + 1) }

    public func id(of token: String) -> Int? { addedByContent[token] ?? model.id(forToken: token).map(Int.init) }

    public func token(of id: Int) -> String? {
        if let a = addedByID[id] { return a.content }
        guard id >= 0, id < model.idToToken.count, !model.idToToken[id].isEmpty || model.vocab[[]] == Int32(id) else { return nil }
        return model.idToToken[id]
    }

    public func isSpecial(_ id: Int) -> Bool { addedByID[id]?.special ?? false }

    /// Token ids of `text`. Added and special tokens written in the text are recognised (as HF does);
    /// `addSpecialTokens` applies the post-processor's template (e.g. a leading BOS). Throws (naming the file)
    /// only when a pattern of the tokenizer backtracks past the reference's retry limit on this text.
    public func encode(_ text: String, addSpecialTokens: Bool = false) throws -> [Int] {
        do { return try encodeChecked(text, addSpecialTokens: addSpecialTokens) } catch let e as RegexError {
            throw TokenizerError(file: source, e.description)
        }
    }

    func encodeChecked(_ text: String, addSpecialTokens: Bool) throws -> [Int] {
        var ids: [Int32] = []
        ids.reserveCapacity(text.utf8.count / 3)
        let bytes = Array(text.utf8)
        for (range, id) in rawMatcher.split(bytes) {
            if let id { ids.append(Int32(id)); continue }
            let piece = String(decoding: bytes[range], as: UTF8.self)
            let normalized = try normalizer?.normalize(piece) ?? piece
            let nb = Array(normalized.utf8)
            for (r2, id2) in normalizedMatcher.split(nb) {
                if let id2 { ids.append(Int32(id2)); continue }
                let scalars = String(decoding: nb[r2], as: UTF8.self).unicodeScalars.map(\.value)
                let p = Piece(scalars: scalars, atOrigin: range.lowerBound == 0 && r2.lowerBound == 0)
                let words = try preTokenizer?.split([p]) ?? (scalars.isEmpty ? [] : [p])
                for w in words { model.tokenize(w.scalars, into: &ids) }
            }
        }
        let out = ids.map(Int.init)
        return addSpecialTokens ? postProcessor.process(out) : out
    }

    /// Text of `ids`; unknown ids are skipped. With `skipSpecialTokens`, special added tokens are dropped.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) throws -> String {
        let tokens: [String] = ids.compactMap { id in
            if let a = addedByID[id] { return skipSpecialTokens && a.special ? nil : a.content }
            return token(of: id)
        }
        guard let decoder else { return tokens.joined(separator: " ") }
        do { return try decoder.decode(tokens).joined() } catch let e as RegexError { throw TokenizerError(file: source, e.description) }
    }
}

extension Tokenizer {
    /// What another engine's vocabulary needs (GGUF export): every token by id, the merges in rank order with the
    /// token each one makes, and how text is split before BPE.
    public struct Vocabulary: Sendable {
        public enum Splitting: Sendable {
            /// SentencePiece-style: spaces become ▁ (Metaspace, or a Replace normalizer), bytes fall back to <0xXX>.
            case sentencePiece
            /// GPT-2 byte-level BPE split by GPT-2's own pattern (ByteLevel with its regex, nothing else).
            case gpt2ByteLevel
            case other
        }
        public var tokens: [String?]
        public var merges: [(left: String, right: String, merged: Int, rank: Int)]
        public var unknown: Int?
        public var splitting: Splitting
    }

    public var vocabulary: Vocabulary {
        let tokens = (0..<vocabSize).map { token(of: $0) }
        let merges = model.merges.sorted { $0.value.rank < $1.value.rank }.map { key, m in
            (left: model.idToToken[Int(key >> 32)], right: model.idToToken[Int(key & 0xFFFF_FFFF)], merged: Int(m.id), rank: Int(m.rank))
        }
        func stages(_ p: (any PreTokenizer)?) -> [any PreTokenizer] {
            if let s = p as? SequencePreTokenizer { return s.stages.flatMap { stages($0) } }
            return p.map { [$0] } ?? []
        }
        func normalizers(_ n: (any Normalizer)?) -> [any Normalizer] {
            if let s = n as? SequenceNormalizer { return s.stages.flatMap { normalizers($0) } }
            return n.map { [$0] } ?? []
        }
        let pre = stages(preTokenizer)
        let splitting: Vocabulary.Splitting
        if model.byteFallback && (pre.contains { $0 is MetaspacePreTokenizer }
                                  || normalizers(normalizer).contains { ($0 as? ReplaceNormalizer)?.content == "\u{2581}" }) {
            splitting = .sentencePiece
        } else if pre.count == 1, let b = pre[0] as? ByteLevelPreTokenizer, b.useRegex {
            splitting = .gpt2ByteLevel
        } else {
            splitting = .other
        }
        return Vocabulary(tokens: tokens, merges: merges, unknown: model.unkID.map(Int.init), splitting: splitting)
    }
}
