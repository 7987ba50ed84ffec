import Foundation

/// CLIP's byte-level BPE tokenizer for Stable Diffusion 1.x prompts, from the `vocab.json` and
/// `merges.txt` an exported pipeline ships. Gives the ids edgekit.models.clip_tokenizer gives
/// (Hugging Face's CLIPTokenizer, tokenizers backend), step for step:
///   1. special tokens written literally in the prompt ("<|startoftext|>", "<|endoftext|>")
///      become their ids, the text around them is tokenized on its own;
///   2. normalize: Unicode NFC, every whitespace run -> one space, lowercase;
///   3. pre-tokenize: keep the matches of CLIP's pattern
///      's|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\s\p{L}\p{N}]+ (first alternative that matches,
///      scanning left to right; digits one at a time), drop the whitespace between them;
///   4. each piece's UTF-8 bytes -> GPT-2's printable byte characters; "</w>" marks the last;
///   5. BPE: merge the adjacent pair with the lowest merges.txt rank until none applies;
///   6. <|startoftext|> + ids (the first 75) + <|endoftext|>, padded with <|endoftext|> to 77.
/// Lowercasing maps each code point on its own (Unicode's full mapping); the one context rule
/// of Rust's to_lowercase, a word-final capital sigma becoming "ς", is not applied.
public final class ClipTokenizer {
    public static let maxLength = 77
    public static let startToken = "<|startoftext|>"
    public static let endToken = "<|endoftext|>"

    public let startId: Int32
    public let endId: Int32
    private let vocabulary: [String: Int32]
    private let mergeRanks: [String: Int]
    private let byteCharacters: [String]
    private var wordCache: [String: [Int32]] = [:]

    /// `vocabJSON`: vocab.json's bytes; `merges`: merges.txt's text ("#version" line first).
    public init(vocabJSON: Data, merges: String) throws {
        let hint = "ship vocab.json and merges.txt as `edgekit export` writes them for a pipeline."
        // Locals first: a class may not read its own properties before all are set.
        let vocab: [String: Int32]
        do {
            vocab = try JSONDecoder().decode([String: Int32].self, from: vocabJSON)
        } catch {
            throw EdgekitCoreError("vocab.json is not a JSON object of token ids.", hint: hint)
        }
        guard let start = vocab[Self.startToken], let end = vocab[Self.endToken] else {
            throw EdgekitCoreError(
                "vocab.json lacks \(Self.startToken) or \(Self.endToken).", hint: hint
            )
        }
        vocabulary = vocab
        startId = start
        endId = end
        var ranks: [String: Int] = [:]
        var rank = 0
        for line in merges.split(separator: "\n", omittingEmptySubsequences: true) {
            if rank == 0 && ranks.isEmpty && line.hasPrefix("#version") { continue }
            let parts = line.split(separator: " ")
            guard parts.count == 2 else {
                throw EdgekitCoreError(
                    "merges.txt line \(rank + 2) is '\(line)'; each line holds two symbols.",
                    hint: hint
                )
            }
            ranks[Self.pairKey(String(parts[0]), String(parts[1]))] = rank
            rank += 1
        }
        mergeRanks = ranks
        byteCharacters = Self.bytesToUnicode()
    }

    /// The prompt as exactly 77 token ids.
    public func encode(_ prompt: String) -> [Int32] {
        var ids: [Int32] = []
        for segment in Self.splitSpecialTokens(prompt) {
            switch segment {
            case .special(let token):
                ids.append(token == Self.startToken ? startId : endId)
            case .text(let text):
                for piece in Self.preTokenize(Self.normalize(text)) {
                    ids.append(contentsOf: bpe(piece))
                }
            }
        }
        let content = ids.prefix(Self.maxLength - 2)
        var result = [startId] + content + [endId]
        result += [Int32](repeating: endId, count: Self.maxLength - result.count)
        return result
    }

    // MARK: 1. Special tokens

    enum Segment: Equatable {
        case special(String)
        case text(String)
    }

    static func splitSpecialTokens(_ prompt: String) -> [Segment] {
        var segments: [Segment] = []
        var rest = Substring(prompt)
        while !rest.isEmpty {
            let found = [startToken, endToken]
                .compactMap { token in rest.range(of: token).map { (token, $0) } }
                .min { $0.1.lowerBound < $1.1.lowerBound }
            guard let found else {
                segments.append(.text(String(rest)))
                break
            }
            let (token, range) = found
            if range.lowerBound > rest.startIndex {
                segments.append(.text(String(rest[rest.startIndex..<range.lowerBound])))
            }
            segments.append(.special(token))
            rest = rest[range.upperBound...]
        }
        return segments
    }

    // MARK: 2. Normalize

    static func normalize(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        var inWhitespace = false
        for scalar in text.precomposedStringWithCanonicalMapping.unicodeScalars {
            if scalar.properties.isWhitespace {
                if !inWhitespace { out.append(" ") }
                inWhitespace = true
                continue
            }
            inWhitespace = false
            out.append(contentsOf: scalar.properties.lowercaseMapping.unicodeScalars)
        }
        return String(out)
    }

    // MARK: 3. Pre-tokenize

    static let contractions = ["s", "t", "re", "ve", "m", "ll", "d"]
        .map { Array($0.unicodeScalars) }

    static func isLetter(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            return true
        default:
            return false
        }
    }

    static func isNumber(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.properties.generalCategory {
        case .decimalNumber, .letterNumber, .otherNumber: return true
        default: return false
        }
    }

    static func isOther(_ scalar: Unicode.Scalar) -> Bool {
        !scalar.properties.isWhitespace && !isLetter(scalar) && !isNumber(scalar)
    }

    /// The pieces CLIP's pattern matches, in order (Unicode scalars, not grapheme clusters: a
    /// combining accent left after NFC is a piece of its own, as in the regex).
    static func preTokenize(_ text: String) -> [String] {
        let scalars = Array(text.unicodeScalars)
        let specials = [startToken, endToken].map { Array($0.unicodeScalars) }
        var pieces: [String] = []
        var position = 0
        func take(_ length: Int) {
            var piece = String.UnicodeScalarView()
            piece.append(contentsOf: scalars[position..<(position + length)])
            pieces.append(String(piece))
            position += length
        }
        func matches(_ candidate: [Unicode.Scalar], at start: Int) -> Bool {
            start + candidate.count <= scalars.count
                && Array(scalars[start..<(start + candidate.count)]) == candidate
        }
        func run(from start: Int, while belongs: (Unicode.Scalar) -> Bool) -> Int {
            var end = start
            while end < scalars.count && belongs(scalars[end]) { end += 1 }
            return end - start
        }
        while position < scalars.count {
            let scalar = scalars[position]
            if let special = specials.first(where: { matches($0, at: position) }) {
                take(special.count)
            } else if scalar == "'",
                let suffix = contractions.first(where: { matches($0, at: position + 1) })
            {
                take(1 + suffix.count)
            } else if isLetter(scalar) {
                take(run(from: position, while: isLetter))
            } else if isNumber(scalar) {
                take(1)
            } else if isOther(scalar) {
                take(run(from: position, while: isOther))
            } else {
                position += 1  // whitespace: removed
            }
        }
        return pieces
    }

    // MARK: 4-5. Byte-level BPE

    /// GPT-2/CLIP's reversible byte -> printable character table.
    static func bytesToUnicode() -> [String] {
        let printable = Array(33...126) + Array(161...172) + Array(174...255)
        var table = [String](repeating: "", count: 256)
        var extra = 0
        for byte in 0..<256 {
            let code = printable.contains(byte) ? byte : 256 + extra
            if !printable.contains(byte) { extra += 1 }
            table[byte] = String(Character(Unicode.Scalar(UInt32(code))!))
        }
        return table
    }

    static func pairKey(_ first: String, _ second: String) -> String { first + " " + second }

    func bpe(_ piece: String) -> [Int32] {
        if let cached = wordCache[piece] { return cached }
        var symbols = piece.utf8.map { byteCharacters[Int($0)] }
        guard !symbols.isEmpty else { return [] }
        symbols[symbols.count - 1] += "</w>"
        while symbols.count > 1 {
            var best: (rank: Int, first: String, second: String)?
            for index in 0..<(symbols.count - 1) {
                if let rank = mergeRanks[Self.pairKey(symbols[index], symbols[index + 1])],
                    rank < (best?.rank ?? Int.max)
                {
                    best = (rank, symbols[index], symbols[index + 1])
                }
            }
            guard let best else { break }
            let (first, second) = (best.first, best.second)
            // Merge every occurrence of the pair, left to right.
            var merged: [String] = []
            var index = 0
            while index < symbols.count {
                if index < symbols.count - 1 && symbols[index] == first
                    && symbols[index + 1] == second
                {
                    merged.append(first + second)
                    index += 2
                } else {
                    merged.append(symbols[index])
                    index += 1
                }
            }
            symbols = merged
        }
        let ids = symbols.map { vocabulary[$0] ?? endId }  // unknown symbols: the unk token
        wordCache[piece] = ids
        return ids
    }
}
