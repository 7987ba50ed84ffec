package dev.edgekit.core

import java.text.Normalizer
import java.util.Locale
import java.util.regex.Pattern

/**
 * CLIP's byte-level BPE tokenizer for Stable Diffusion 1.x prompts, from the `vocab.json` and
 * `merges.txt` an exported pipeline ships. Gives the ids of transformers' CLIPTokenizer (the
 * `tokenizers` pipeline edgekit/models/clip_tokenizer.py loads), step by step:
 *   1. the special-token texts <|startoftext|> and <|endoftext|> are split out first and
 *      become their ids;
 *   2. normalize: Unicode NFC, every run of Unicode whitespace -> one space, lower-case;
 *   3. pre-tokenize: keep the matches of CLIP's pattern (contractions, letter runs, single
 *      digits, runs of other non-space characters), drop the rest (spaces);
 *   4. each piece's UTF-8 bytes -> GPT-2's printable byte characters, "</w>" on the last one;
 *   5. BPE: merge the adjacent pair with the lowest merge rank until none is in merges.txt;
 *   6. <|startoftext|> + ids (at most 75) + <|endoftext|>, padded to 77 with <|endoftext|>.
 */
class ClipTokenizer(vocabJson: String, mergesTxt: String) {
    private val vocab: Map<String, Int>
    private val ranks: HashMap<String, Int> = HashMap()
    private val cache = HashMap<String, IntArray>()
    val bosId: Int
    val eosId: Int

    init {
        val reader = JsonReader("vocab.json")
        vocab = reader.parseObject(vocabJson).entrySet().associate { (token, id) -> token to id.asInt }
        var rank = 0
        for ((lineNumber, line) in mergesTxt.split('\n').withIndex()) {
            if (line.isEmpty() || (lineNumber == 0 && line.startsWith("#version"))) continue
            val parts = line.split(' ')
            if (parts.size != 2) {
                throw EdgekitCoreException(
                    "merges.txt line ${lineNumber + 1} is \"$line\", not two tokens. " +
                        "Hint: use the merges.txt of the exported pipeline's tokenizer folder.",
                )
            }
            ranks.putIfAbsent(pairKey(parts[0], parts[1]), rank++)
        }
        bosId = vocab[BOS] ?: reader.fail("has no $BOS")
        eosId = vocab[EOS] ?: reader.fail("has no $EOS")
    }

    /** The 77 ids of one prompt. */
    fun encode(prompt: String): IntArray {
        val tokens = ArrayList<Int>()
        // 1. special-token texts, matched in the raw prompt
        val specials = SPECIAL_TOKEN.matcher(prompt)
        var start = 0
        while (specials.find()) {
            encodeText(prompt.substring(start, specials.start()), tokens)
            tokens.add(if (specials.group() == BOS) bosId else eosId)
            start = specials.end()
        }
        encodeText(prompt.substring(start), tokens)
        // 6. truncate to leave room for bos and eos, then pad with eos
        val ids = IntArray(MAX_LENGTH) { eosId }
        ids[0] = bosId
        val kept = minOf(tokens.size, MAX_LENGTH - 2)
        for (i in 0 until kept) ids[i + 1] = tokens[i]
        ids[kept + 1] = eosId
        return ids
    }

    private fun encodeText(text: String, out: MutableList<Int>) {
        if (text.isEmpty()) return
        // 2. normalize
        val normalized = WHITESPACE.matcher(Normalizer.normalize(text, Normalizer.Form.NFC))
            .replaceAll(" ")
            .lowercase(Locale.ROOT)
        // 3. pre-tokenize
        val pieces = PIECE.matcher(normalized)
        while (pieces.find()) {
            for (id in bpe(pieces.group())) out.add(id)
        }
    }

    private fun bpe(piece: String): IntArray = cache.getOrPut(piece) {
        // 4. bytes -> printable characters; the word's end marker on the last symbol
        val bytes = piece.toByteArray(Charsets.UTF_8)
        val symbols = ArrayList<String>(bytes.size)
        for (b in bytes) symbols.add(BYTE_CHARS[b.toInt() and 0xFF].toString())
        symbols[symbols.size - 1] = symbols.last() + END_OF_WORD
        // 5. merge the best-ranked pair everywhere it occurs, left to right, until none is left
        while (symbols.size > 1) {
            var best = Int.MAX_VALUE
            var bestIndex = -1
            for (i in 0 until symbols.size - 1) {
                val rank = ranks[pairKey(symbols[i], symbols[i + 1])] ?: continue
                if (rank < best) {
                    best = rank
                    bestIndex = i
                }
            }
            if (bestIndex < 0) break
            val first = symbols[bestIndex]
            val second = symbols[bestIndex + 1]
            val merged = ArrayList<String>(symbols.size)
            var i = 0
            while (i < symbols.size) {
                if (i < symbols.size - 1 && symbols[i] == first && symbols[i + 1] == second) {
                    merged.add(first + second)
                    i += 2
                } else {
                    merged.add(symbols[i])
                    i += 1
                }
            }
            symbols.clear()
            symbols.addAll(merged)
        }
        // Unknown symbols become the unknown token, which CLIP's files set to <|endoftext|>.
        IntArray(symbols.size) { vocab[symbols[it]] ?: eosId }
    }

    companion object {
        const val MAX_LENGTH = 77
        const val BOS = "<|startoftext|>"
        const val EOS = "<|endoftext|>"
        private const val END_OF_WORD = "</w>"

        private val SPECIAL_TOKEN: Pattern = Pattern.compile(Pattern.quote(BOS) + "|" + Pattern.quote(EOS))

        // Unicode White_Space, spelled out: the tokenizers library's Oniguruma \s matches all of
        // it (NBSP, U+3000, U+2028, U+0085...), plain Java \s only ASCII, and Android's regex
        // refuses the UNICODE_CHARACTER_CLASS flag that would widen it.
        private const val SPACE =
            "\\t\\n\\u000B\\f\\r\\u0020\\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000"
        private val WHITESPACE: Pattern = Pattern.compile("[$SPACE]+")
        private val PIECE: Pattern = Pattern.compile(
            "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^$SPACE\\p{L}\\p{N}]+",
        )

        /** GPT-2's reversible byte -> printable character table. */
        private val BYTE_CHARS: CharArray = run {
            val printable = (('!'.code..'~'.code) + ('¡'.code..'¬'.code) + ('®'.code..'ÿ'.code)).toMutableList()
            val codes = printable.toMutableList()
            var extra = 0
            for (b in 0 until 256) {
                if (b !in printable) {
                    printable.add(b)
                    codes.add(256 + extra)
                    extra += 1
                }
            }
            val table = CharArray(256)
            for (i in printable.indices) table[printable[i]] = codes[i].toChar()
            table
        }

        private fun pairKey(first: String, second: String) = "$first $second"

        /** The tokenizer of an exported pipeline's tokenizer folder. */
        fun fromFolder(folder: java.io.File): ClipTokenizer =
            ClipTokenizer(
                java.io.File(folder, "vocab.json").readText(Charsets.UTF_8),
                java.io.File(folder, "merges.txt").readText(Charsets.UTF_8),
            )
    }
}
