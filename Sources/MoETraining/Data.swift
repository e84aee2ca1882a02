import Foundation
import MoETensor
import MoETokenizer

/// Training text: the training part of each file (`TextSplit`; the validation slice at its end is read only
/// with `part: .validation`, for the validation loss). Plain `.txt` files form one token stream (each file
/// tokenized whole, files joined by the EOS token) from which windows are drawn at seeded offsets. `.jsonl` files hold one
/// `{"instruction": …, "response": …}` object per line (optional `"input"` appended to the instruction after
/// a blank line), formatted with MoEITS's template `"Instruction:\n{instruction}\n\nResponse:\n{response}"` +
/// EOS; only response tokens (and the EOS) are in the loss, and each example is truncated or padded (EOS,
/// outside the loss) to the sequence length. A step's batches depend only on (seed, step, micro-batch), so
/// a resumed run sees exactly the batches an uninterrupted one would.
public struct TrainingData: Sendable {
    public static let promptTemplate = InstructionExample.promptTemplate

    public enum Kind: Sendable { case stream([Int]), examples([(ids: [Int], targets: [Int])]) }
    public let kind: Kind
    public let seqLen: Int
    public let seed: UInt64
    /// FNV-1a over file names and contents.
    public let hash: String
    public let eos: Int

    /// `part` of the files (`TextSplit`): training reads the first ~90% of each, the validation loss the rest.
    public init(files: [URL], tokenizer: Tokenizer, seqLen: Int, seed: UInt64, part: TextSplit.Part = .training) throws {
        guard seqLen >= 2 else { throw TrainingError.invalid("--seq-len must be at least 2") }
        guard !files.isEmpty else { throw TrainingError.invalid("no training files given") }
        let eosToken = TrainingData.eosToken(near: files, tokenizer: tokenizer)
        eos = eosToken
        var h: UInt64 = FNV.offsetBasis
        func fnv(_ bytes: some Sequence<UInt8>) { for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 } }
        let jsonl = files.filter { $0.pathExtension == "jsonl" }
        guard jsonl.isEmpty || jsonl.count == files.count else { throw TrainingError.invalid("mix of .txt and .jsonl training files: give one kind") }
        if jsonl.isEmpty {
            var stream: [Int] = []
            for f in files {
                let data: Data, text: String
                do { (data, text) = try TextSplit.read(f, part) } catch let e as DataFileError { throw TrainingError.invalid(e.description) }
                fnv(f.lastPathComponent.utf8); fnv(data)
                if !stream.isEmpty { stream.append(eosToken) }
                stream += try tokenizer.encode(text)
            }
            guard stream.count > seqLen else { throw TrainingError.invalid("the \(part.rawValue) text has \(stream.count) tokens, not one window of \(seqLen) + 1") }
            kind = .stream(stream)
        } else {
            var examples: [(ids: [Int], targets: [Int])] = []
            for f in files {
                let items: [InstructionExample]
                do {
                    let (data, text) = try TextSplit.read(f, part)
                    fnv(f.lastPathComponent.utf8); fnv(data)
                    items = try InstructionExample.parse(text, path: f.path)
                } catch let e as DataFileError { throw TrainingError.invalid(e.description) }
                for item in items {
                    let p = try tokenizer.encode(item.prompt), r = try tokenizer.encode(item.response) + [eosToken]
                    var ids = Array((p + r).prefix(seqLen + 1))
                    var labels = Array(([Int](repeating: TrainingBatch.ignoreIndex, count: p.count) + r).prefix(seqLen + 1))
                    while ids.count < seqLen + 1 { ids.append(eosToken); labels.append(TrainingBatch.ignoreIndex) }
                    examples.append((Array(ids.prefix(seqLen)), Array(labels.dropFirst())))
                }
            }
            guard !examples.isEmpty else { throw TrainingError.invalid("the \(part.rawValue) part of the JSONL files holds no examples") }
            kind = .examples(examples)
        }
        self.seqLen = seqLen
        self.seed = seed
        hash = String(h, radix: 16)
    }

    /// A ready token stream (tests, and callers that tokenize themselves).
    public init(stream: [Int], seqLen: Int, seed: UInt64, eos: Int = 0) {
        precondition(stream.count > seqLen, "stream shorter than one window")
        kind = .stream(stream)
        self.seqLen = seqLen
        self.seed = seed
        self.eos = eos
        var h: UInt64 = FNV.offsetBasis
        for t in stream { h = (h ^ UInt64(t)) &* 0x100_0000_01B3 }
        hash = String(h, radix: 16)
    }

    /// The tokenizer's EOS: from tokenizer_config.json next to the tokenizer when known, else `</s>`, `<|endoftext|>`, `<|im_end|>`.
    static func eosToken(near files: [URL], tokenizer: Tokenizer) -> Int {
        for t in ["</s>", "<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<eos>"] { if let id = tokenizer.id(of: t) { return id } }
        return 0
    }

    /// Batch `micro` of optimiser step `step`: `size` sequences.
    public func batch(step: Int, micro: Int, size: Int) -> TrainingBatch {
        // The generator's state is a hash of (seed, step, micro). Seeding it with seed ^ step·γ directly (γ being
        // SplitMix64's own increment) made step k's i-th draw step k + 1's (i − 1)-th at seed 0: consecutive
        // steps shared all but one window.
        var rng = SeededGenerator(seed: mixSeed(mixSeed(seed, UInt64(step)), UInt64(micro) ^ 0xC2B2_AE3D_27D4_EB4F))
        switch kind {
        case .stream(let s):
            let span = UInt64(s.count - seqLen)
            var ids: [[Int]] = [], targets: [[Int]] = []
            for _ in 0..<size {
                let o = Int(rng.next() % span)
                ids.append(Array(s[o..<(o + seqLen)]))
                targets.append(Array(s[(o + 1)...(o + seqLen)]))
            }
            return TrainingBatch(ids: ids, targets: targets)
        case .examples(let ex):
            let picks = (0..<size).map { _ in ex[Int(rng.next() % UInt64(ex.count))] }
            return TrainingBatch(ids: picks.map(\.ids), targets: picks.map(\.targets))
        }
    }

    public var tokens: Int {
        switch kind {
        case .stream(let s): s.count
        case .examples(let e): e.count * seqLen
        }
    }
}
