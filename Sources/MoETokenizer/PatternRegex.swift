/// A small backtracking regular-expression engine for the patterns tokenizers use (GPT-2, Llama-3/Qwen2,
/// Tekken, digits, whitespace…), with the leftmost-first (Perl/Oniguruma) semantics HF `tokenizers` gets
/// from onig. Supported: literals and escapes, `.`, classes `[...]` with ranges and negation, `\p{…}` /
/// `\P{…}` general categories, `\s \S \d \D \w \W`, groups `(…)`, `(?:…)`, `(?i:…)`, `(?i)`, lookahead
/// `(?=…)` / `(?!…)`, alternation, `? * + {n} {n,} {n,m}` greedy or lazy, anchors `^ $`.
/// Anything else is a `RegexError` naming the problem. A single-character repetition (`\p{L}+`) runs as one
/// instruction whose backtracking is a counter, so the common patterns allocate nothing per character.
///
/// Bounded like the reference: a loop iteration that matches nothing ends the loop (so `a**` or `(a?)*`
/// cannot spin), programs are at most `maxProgram` instructions (onig's repeat limit is 100,000), and a match
/// attempt that backtracks more than `retryLimit` times (onig's default retry-limit-in-match, 10,000,000)
/// is an error, as it is in HF tokenizers, instead of running for ever on `(a+)+$`.
public final class PatternRegex: @unchecked Sendable {
    public let pattern: String

    struct CharSet {
        var ranges: [ClosedRange<UInt32>] = []
        var categories: UInt32 = 0
        var negated = false
        var asciiLow: UInt64 = 0, asciiHigh: UInt64 = 0

        mutating func finish() {
            asciiLow = 0; asciiHigh = 0
            for v in UInt32(0)..<128 where slowMatch(v, UnicodeCategory.of(v)) {
                if v < 64 { asciiLow |= 1 << UInt64(v) } else { asciiHigh |= 1 << UInt64(v - 64) }
            }
        }

        func slowMatch(_ v: UInt32, _ cat: UInt32) -> Bool {
            var hit = (cat & categories) != 0
            if !hit { for r in ranges where r.contains(v) { hit = true; break } }
            return hit != negated
        }

        @inline(__always) func matches(_ v: UInt32, _ cat: UInt32) -> Bool {
            if v < 64 { return (asciiLow >> UInt64(v)) & 1 == 1 }
            if v < 128 { return (asciiHigh >> UInt64(v - 64)) & 1 == 1 }
            return slowMatch(v, cat)
        }
    }

    indirect enum Node {
        case set(Int)
        case concat([Node])
        case alt([Node])
        case repetition(Node, min: Int, max: Int?, greedy: Bool)
        case look(Node, negative: Bool)
        case start, end
    }

    enum Op {
        case set(Int32)
        case split(Int32, Int32)      // try first, then second
        case jump(Int32)
        case star(set: Int32, min: Int32, max: Int32, greedy: Bool)  // max -1 = unbounded
        case look(program: Int32, negative: Bool)
        case assertStart, assertEnd
        case mark(Int32)              // remember the position in slot n (restored on backtracking)
        case progress(Int32)          // fail when the position is still the one in slot n (an empty iteration)
        case match
    }

    public static let retryLimit = 10_000_000
    public static let maxProgram = 100_000
    var slotCount = 0

    var sets: [CharSet] = []
    var programs: [[Op]] = []   // programs[0] is the main one; the rest are lookaheads

    public init(_ pattern: String) throws {
        self.pattern = pattern
        var parser = Parser(scalars: Array(pattern.unicodeScalars).map(\.value), pattern: pattern)
        let node = try parser.parseAlternation()
        if parser.index < parser.scalars.count { throw parser.error("unbalanced ')'") }
        sets = parser.sets.map { var s = $0; s.finish(); return s }
        programs = [[]]
        var main: [Op] = []
        guard Self.size(node) <= Self.maxProgram else {
            throw RegexError(pattern: pattern, problem: "too large once its repetitions are expanded (over \(Self.maxProgram) instructions)")
        }
        compile(node, into: &main)
        main.append(.match)
        programs[0] = main
    }

    /// Instructions `node` compiles to (saturating), checked before compiling so `(ab){99999}{99999}` is refused.
    static func size(_ node: Node) -> Int {
        switch node {
        case .set, .start, .end: return 1
        case .concat(let parts): return parts.reduce(0) { min(Int.max / 4, $0 + size($1)) }
        case .alt(let options): return options.reduce(0) { min(Int.max / 4, $0 + size($1) + 2) }
        case .look(let body, _): return size(body) + 2
        case .repetition(let body, let mn, let mx, _):
            if case .set = body { return 1 }
            let copies = max(mn, mx ?? (mn + 1))
            let b = size(body) + 3
            return copies > (Int.max / 4) / b ? Int.max / 4 : copies * b
        }
    }

    /// Whether `node` can match the empty string.
    static func nullable(_ node: Node) -> Bool {
        switch node {
        case .set: return false
        case .concat(let parts): return parts.allSatisfy(nullable)
        case .alt(let options): return options.contains(where: nullable)
        case .repetition(let body, let mn, _, _): return mn == 0 || nullable(body)
        case .look, .start, .end: return true
        }
    }

    func compile(_ node: Node, into code: inout [Op]) {
        switch node {
        case .set(let i):
            code.append(.set(Int32(i)))
        case .concat(let parts):
            for p in parts { compile(p, into: &code) }
        case .alt(let options):
            var jumps: [Int] = []
            for (k, o) in options.enumerated() {
                if k < options.count - 1 {
                    let split = code.count
                    code.append(.split(0, 0))
                    compile(o, into: &code)
                    jumps.append(code.count)
                    code.append(.jump(0))
                    code[split] = .split(Int32(split + 1), Int32(code.count))
                } else {
                    compile(o, into: &code)
                }
            }
            for j in jumps { code[j] = .jump(Int32(code.count)) }
        case .repetition(let body, let min, let max, let greedy):
            if case .set(let s) = body {
                code.append(.star(set: Int32(s), min: Int32(min), max: Int32(max ?? -1), greedy: greedy))
                return
            }
            for _ in 0..<min { compile(body, into: &code) }
            if let max {
                var pending: [Int] = []
                for _ in min..<max {
                    pending.append(code.count)
                    code.append(.split(0, 0))
                    compile(body, into: &code)
                }
                for p in pending {
                    code[p] = greedy ? .split(Int32(p + 1), Int32(code.count)) : .split(Int32(code.count), Int32(p + 1))
                }
            } else {
                let loop = code.count
                code.append(.split(0, 0))
                // An iteration that matched nothing ends the loop (it would repeat for ever).
                let slot = Self.nullable(body) ? Int32(slotCount) : nil
                if let slot { slotCount += 1; code.append(.mark(slot)) }
                compile(body, into: &code)
                if let slot { code.append(.progress(slot)) }
                code.append(.jump(Int32(loop)))
                code[loop] = greedy ? .split(Int32(loop + 1), Int32(code.count)) : .split(Int32(code.count), Int32(loop + 1))
            }
        case .look(let body, let negative):
            var sub: [Op] = []
            compile(body, into: &sub)
            sub.append(.match)
            programs.append(sub)
            code.append(.look(program: Int32(programs.count - 1), negative: negative))
        case .start: code.append(.assertStart)
        case .end: code.append(.assertEnd)
        }
    }

    // MARK: - Matching

    /// The text being searched: scalar values and their category bits.
    public struct Text {
        public let scalars: [UInt32]
        public let categories: [UInt32]
        public init(_ scalars: [UInt32]) {
            self.scalars = scalars
            self.categories = scalars.map { UnicodeCategory.of($0) }
        }
        public init(_ s: String) { self.init(s.unicodeScalars.map(\.value)) }
        public var count: Int { scalars.count }
    }

    struct Frame {
        var pc: Int32
        var pos: Int32
        var low: Int32     // for star frames: the smallest position still to try; -1 for plain frames
    }

    /// Marks a frame that restores slot `pc` to `pos` when popped.
    static let restoreSlot = Int32.min

    /// End of the match starting exactly at `start`, or nil; `budget` counts backtracking steps down.
    func match(_ text: Text, at start: Int, program: Int = 0, stack: inout [Frame], slots: inout [Int32], budget: inout Int) throws -> Int? {
        let code = programs[program]
        let n = text.count
        let base = stack.count
        defer { stack.removeSubrange(base...) }
        var pc = 0, pos = start
        return try text.scalars.withUnsafeBufferPointer { sc in
            try text.categories.withUnsafeBufferPointer { ca in
                while true {
                    var fail = false
                    switch code[pc] {
                    case .set(let s):
                        if pos < n && sets[Int(s)].matches(sc[pos], ca[pos]) { pos += 1; pc += 1 } else { fail = true }
                    case .split(let a, let b):
                        stack.append(Frame(pc: b, pos: Int32(pos), low: -1))
                        pc = Int(a)
                    case .jump(let a):
                        pc = Int(a)
                    case .star(let s, let mn, let mx, let greedy):
                        let set = sets[Int(s)]
                        var k = 0
                        let limit = mx < 0 ? n - pos : min(Int(mx), n - pos)
                        if greedy {
                            while k < limit && set.matches(sc[pos + k], ca[pos + k]) { k += 1 }
                            if k < Int(mn) { fail = true; break }
                            if k > Int(mn) { stack.append(Frame(pc: Int32(pc + 1), pos: Int32(pos + k - 1), low: Int32(pos + Int(mn)))) }
                            pos += k
                            pc += 1
                        } else {
                            while k < Int(mn) && k < limit && set.matches(sc[pos + k], ca[pos + k]) { k += 1 }
                            if k < Int(mn) { fail = true; break }
                            pos += k
                            // Lazy: remember to try one more character later (encoded with low = -2 - limitEnd).
                            if k < limit { stack.append(Frame(pc: Int32(pc), pos: Int32(pos), low: Int32(-2 - (pos - k + limit)))) }
                            pc += 1
                        }
                    case .look(let p, let negative):
                        let found = try match(text, at: pos, program: Int(p), stack: &stack, slots: &slots, budget: &budget) != nil
                        if found != negative { pc += 1 } else { fail = true }
                    case .assertStart:
                        if pos == 0 { pc += 1 } else { fail = true }
                    case .assertEnd:
                        if pos == n { pc += 1 } else { fail = true }
                    case .mark(let k):
                        stack.append(Frame(pc: k, pos: slots[Int(k)], low: Self.restoreSlot))
                        slots[Int(k)] = Int32(pos)
                        pc += 1
                    case .progress(let k):
                        if Int32(pos) == slots[Int(k)] { fail = true } else { pc += 1 }
                    case .match:
                        return pos
                    }
                    if fail {
                        // Backtrack.
                        budget -= 1
                        if budget < 0 {
                            throw RegexError(pattern: pattern, problem: "backtracked more than \(Self.retryLimit) times in one match attempt (catastrophic backtracking; HF tokenizers stops at the same limit)")
                        }
                        var resumed = false
                        while stack.count > base {
                            let f = stack.removeLast()
                            if f.low == Self.restoreSlot {
                                slots[Int(f.pc)] = f.pos
                                continue
                            }
                            if f.low == -1 {
                                pc = Int(f.pc); pos = Int(f.pos); resumed = true; break
                            } else if f.low >= 0 {
                                // Greedy star: give back one character.
                                pc = Int(f.pc); pos = Int(f.pos)
                                if f.pos > f.low { stack.append(Frame(pc: f.pc, pos: f.pos - 1, low: f.low)) }
                                resumed = true; break
                            } else {
                                // Lazy star: take one more character if it matches.
                                let end = Int(-2 - f.low)
                                let p = Int(f.pos)
                                guard case .star(let s, _, _, _) = code[Int(f.pc)], p < end, sets[Int(s)].matches(sc[p], ca[p]) else { continue }
                                if p + 1 < end { stack.append(Frame(pc: f.pc, pos: Int32(p + 1), low: f.low)) }
                                pc = Int(f.pc) + 1; pos = p + 1; resumed = true; break
                            }
                        }
                        if !resumed { return nil }
                    }
                }
            }
        }
    }

    /// All non-overlapping matches, leftmost-first, as scalar index ranges (onig's find_iter order).
    public func matches(in text: Text) throws -> [Range<Int>] {
        var out: [Range<Int>] = []
        var stack: [Frame] = []
        stack.reserveCapacity(64)
        var slots = [Int32](repeating: -1, count: slotCount)
        var start = 0
        let n = text.count
        while start <= n {
            var budget = Self.retryLimit
            if let end = try match(text, at: start, stack: &stack, slots: &slots, budget: &budget) {
                out.append(start..<end)
                start = end > start ? end : start + 1
            } else {
                start += 1
            }
        }
        return out
    }

    /// True when the pattern matches somewhere.
    public func firstMatch(in text: Text) throws -> Range<Int>? {
        var stack: [Frame] = []
        var slots = [Int32](repeating: -1, count: slotCount)
        for start in 0...text.count {
            var budget = Self.retryLimit
            if let end = try match(text, at: start, stack: &stack, slots: &slots, budget: &budget) { return start..<end }
        }
        return nil
    }
}

// MARK: - Parser

extension PatternRegex {
    struct Parser {
        let scalars: [UInt32]
        let pattern: String
        var index = 0
        var caseInsensitive = false
        var sets: [CharSet] = []

        init(scalars: [UInt32], pattern: String) {
            self.scalars = scalars
            self.pattern = pattern
        }

        func error(_ s: String) -> RegexError { RegexError(pattern: pattern, problem: "\(s) at offset \(index)") }
        var atEnd: Bool { index >= scalars.count }
        func peek(_ k: Int = 0) -> UInt32? { index + k < scalars.count ? scalars[index + k] : nil }
        mutating func next() -> UInt32 { defer { index += 1 }; return scalars[index] }
        mutating func eat(_ c: Character) -> Bool {
            if peek() == c.unicodeScalars.first!.value { index += 1; return true }
            return false
        }

        mutating func addSet(_ s: CharSet) -> Node {
            sets.append(s)
            return .set(sets.count - 1)
        }

        mutating func parseAlternation() throws -> Node {
            var options = [try parseConcat()]
            while eat("|") { options.append(try parseConcat()) }
            return options.count == 1 ? options[0] : .alt(options)
        }

        mutating func parseConcat() throws -> Node {
            var parts: [Node] = []
            while let c = peek(), c != 0x7C /* | */, c != 0x29 /* ) */ {
                var atom = try parseAtom()
                guard let a = atom else { continue }
                atom = try parseQuantifier(a)
                parts.append(atom!)
            }
            return parts.count == 1 ? parts[0] : .concat(parts)
        }

        mutating func parseQuantifier(_ atom: Node) throws -> Node {
            var node = atom
            while let c = peek() {
                var mn = 0, mx: Int? = nil
                switch c {
                case 0x3F: mn = 0; mx = 1; index += 1          // ?
                case 0x2A: mn = 0; mx = nil; index += 1        // *
                case 0x2B: mn = 1; mx = nil; index += 1        // +
                case 0x7B:                                     // {
                    guard let (a, b) = try parseBraces() else { return node }
                    mn = a; mx = b
                default: return node
                }
                var greedy = true
                if eat("?") { greedy = false } else if eat("+") { throw error("possessive quantifiers are not supported") }
                if case .look = node { throw error("quantified lookahead") }
                node = .repetition(node, min: mn, max: mx, greedy: greedy)
            }
            return node
        }

        /// `{n}`, `{n,}`, `{n,m}` and `{,m}` (= `{0,m}`, onig's Ruby syntax, which tokenizers compiles with); a `{` that
        /// starts none of these is a literal (as in onig). A count above onig's limit of 100,000 is refused, as onig does.
        mutating func parseBraces() throws -> (Int, Int?)? {
            let save = index
            index += 1
            func number() throws -> Int? {
                var v: Int? = nil
                while let c = peek(), c >= 0x30, c <= 0x39 {
                    v = (v ?? 0) * 10 + Int(c - 0x30); index += 1
                    if v! > Self.maxRepeat { throw error("repeat count above \(Self.maxRepeat) (onig: too big number for repeat range)") }
                }
                return v
            }
            let a = try number()
            if a == nil {
                // `{,m}`: onig reads it as {0,m}.
                guard eat(","), let b = try number(), eat("}") else { index = save; return nil }
                return (0, b)
            }
            if eat("}") { return (a!, a!) }
            guard eat(",") else { index = save; return nil }
            let b = try number()
            guard eat("}") else { index = save; return nil }
            if let b, b < a! { throw error("{\(a!),\(b)} has max < min") }
            return (a!, b)
        }

        static let maxRepeat = 100_000

        mutating func literal(_ v: UInt32) -> Node {
            var s = CharSet()
            s.ranges = [v...v]
            if caseInsensitive, let u = Unicode.Scalar(v) {
                for variant in [String(u).lowercased(), String(u).uppercased()] {
                    let vs = variant.unicodeScalars
                    if vs.count == 1, let w = vs.first?.value, w != v { s.ranges.append(w...w) }
                }
            }
            return addSet(s)
        }

        mutating func parseAtom() throws -> Node? {
            let c = next()
            switch c {
            case 0x28: // (
                if eat("?") {
                    if eat(":") { return try group(flags: caseInsensitive) }
                    if eat("=") { let n = try parseAlternation(); try close(); return .look(n, negative: false) }
                    if eat("!") { let n = try parseAlternation(); try close(); return .look(n, negative: true) }
                    if eat("i") {
                        if eat(":") { return try group(flags: true) }
                        if eat(")") { caseInsensitive = true; return nil }
                        throw error("unsupported group flag")
                    }
                    if peek() == 0x3C /* < */ { throw error("lookbehind and named groups are not supported") }
                    throw error("unsupported group syntax")
                }
                return try group(flags: caseInsensitive)
            case 0x29: throw error("unbalanced ')'")
            case 0x5B: return addSet(try parseClass())           // [
            case 0x2E:                                            // .
                var s = CharSet(); s.ranges = [0x0A...0x0A]; s.negated = true
                return addSet(s)
            case 0x5E: return .start                              // ^
            case 0x24: return .end                                // $
            case 0x5C:                                            // backslash
                if let s = try parseEscapeSet() { return addSet(s) }
                return literal(try parseEscapeLiteral())
            case 0x2A, 0x2B, 0x3F: throw error("nothing to repeat")
            default: return literal(c)
            }
        }

        mutating func group(flags: Bool) throws -> Node {
            let saved = caseInsensitive
            caseInsensitive = flags
            let n = try parseAlternation()
            caseInsensitive = saved
            try close()
            return n
        }

        mutating func close() throws { if !eat(")") { throw error("missing ')'") } }

        /// Escapes that stand for a set of characters (\s \d \w \p{…} and their negations), or nil.
        mutating func parseEscapeSet() throws -> CharSet? {
            guard let c = peek() else { throw error("trailing backslash") }
            var s = CharSet()
            switch c {
            case 0x73: s.categories = UnicodeCategory.whiteSpace                                   // s
            case 0x53: s.categories = UnicodeCategory.whiteSpace; s.negated = true                 // S
            case 0x64: s.categories = UnicodeCategory.Nd                                           // d
            case 0x44: s.categories = UnicodeCategory.Nd; s.negated = true                         // D
            case 0x77: s.categories = UnicodeCategory.L | UnicodeCategory.M | UnicodeCategory.Nd | UnicodeCategory.Pc  // w
            case 0x57: s.categories = UnicodeCategory.L | UnicodeCategory.M | UnicodeCategory.Nd | UnicodeCategory.Pc; s.negated = true
            case 0x70, 0x50:                                                                       // p P
                index += 1
                var name = ""
                if eat("{") {
                    while let d = peek(), d != 0x7D { name.unicodeScalars.append(Unicode.Scalar(d)!); index += 1 }
                    if !eat("}") { throw error("unterminated \\p{") }
                } else if let d = peek() {
                    name = String(Unicode.Scalar(d)!); index += 1
                }
                var negate = c == 0x50
                if name.hasPrefix("^") { negate.toggle(); name.removeFirst() }
                guard let bits = UnicodeCategory.byName[name] else { throw error("unsupported property \\p{\(name)}") }
                s.categories = bits
                s.negated = negate
                return s
            default: return nil
            }
            index += 1
            return s
        }

        mutating func parseEscapeLiteral() throws -> UInt32 {
            guard !atEnd else { throw error("trailing backslash") }
            let c = next()
            switch c {
            case 0x6E: return 0x0A  // n
            case 0x72: return 0x0D  // r
            case 0x74: return 0x09  // t
            case 0x66: return 0x0C  // f
            case 0x76: return 0x0B  // v
            case 0x30: return 0     // 0
            case 0x78:              // x
                var hex = ""
                if eat("{") {
                    while let d = peek(), d != 0x7D { hex.unicodeScalars.append(Unicode.Scalar(d)!); index += 1 }
                    _ = eat("}")
                } else {
                    for _ in 0..<2 { if let d = peek() { hex.unicodeScalars.append(Unicode.Scalar(d)!); index += 1 } }
                }
                guard let v = UInt32(hex, radix: 16) else { throw error("bad \\x escape") }
                return v
            case 0x75:              // u
                var hex = ""
                for _ in 0..<4 { if let d = peek() { hex.unicodeScalars.append(Unicode.Scalar(d)!); index += 1 } }
                guard let v = UInt32(hex, radix: 16) else { throw error("bad \\u escape") }
                return v
            default:
                if (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || (c >= 0x30 && c <= 0x39) {
                    throw error("unsupported escape \\\(Unicode.Scalar(c)!)")
                }
                return c  // escaped punctuation stands for itself
            }
        }

        mutating func parseClass() throws -> CharSet {
            var s = CharSet()
            if eat("^") { s.negated = true }
            var first = true
            while true {
                guard let c = peek() else { throw error("unterminated character class") }
                if c == 0x5D && !first { index += 1; break }  // ]
                first = false
                var lo: UInt32
                if c == 0x5C {
                    index += 1
                    if let inner = try parseEscapeSet() {
                        if inner.negated {
                            // A negated escape inside a class (e.g. [\S]) is kept exact through a nested set.
                            throw error("negated escapes inside [...] are not supported")
                        }
                        // onig: "char-class value at start of range" ([\p{L}-\p{N}], [\d-z]); a '-' before ']' is literal.
                        if peek() == 0x2D, let after = peek(1), after != 0x5D { throw error("a class escape cannot start a range in [...]") }
                        s.categories |= inner.categories
                        s.ranges += inner.ranges
                        continue
                    }
                    lo = try parseEscapeLiteral()
                } else if c == 0x5B && peek(1) == 0x3A {
                    throw error("POSIX classes [:...:] are not supported")
                } else {
                    lo = next()
                }
                var hi = lo
                if peek() == 0x2D, let after = peek(1), after != 0x5D {  // a-b
                    index += 1
                    if after == 0x5C {
                        index += 1
                        let save = index
                        if try parseEscapeSet() != nil { throw error("a class escape cannot end a range in [...] (onig: char-class value at end of range)") }
                        index = save
                        hi = try parseEscapeLiteral()
                    } else { hi = next() }
                    if hi < lo { throw error("reversed range in class") }
                }
                s.ranges.append(lo...hi)
                if caseInsensitive {
                    for v in lo...min(hi, lo + 512) {
                        guard let u = Unicode.Scalar(v) else { continue }
                        for variant in [String(u).lowercased(), String(u).uppercased()] {
                            let vs = variant.unicodeScalars
                            if vs.count == 1, let w = vs.first?.value, !(lo...hi).contains(w) { s.ranges.append(w...w) }
                        }
                    }
                }
            }
            return s
        }
    }
}
