package dev.edgekit.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class ClipTokenizerTest {
    private val tokenizer = ClipTokenizer.fromFolder(Contract.file("tokenizer"))

    @Test
    fun idsEqualTransformersCLIPTokenizer() {
        val data = Contract.json("tokenizer/cases.json")
        assertEquals(ClipTokenizer.MAX_LENGTH, data.get("max_length").asInt)
        val mismatches = ArrayList<String>()
        for (element in data.getAsJsonArray("cases")) {
            val case = element.asJsonObject
            val prompt = case.get("prompt").asString
            val expected = case.getAsJsonArray("ids").map { it.asInt }.toIntArray()
            val ids = tokenizer.encode(prompt)
            if (!ids.contentEquals(expected)) {
                mismatches.add("\"$prompt\": got ${ids.toList()} expected ${expected.toList()}")
            }
        }
        assertTrue(mismatches.joinToString("\n"), mismatches.isEmpty())
    }

    @Test
    fun specialTokensAndPadding() {
        assertEquals(49406, tokenizer.bosId)
        assertEquals(49407, tokenizer.eosId)
        val ids = tokenizer.encode("")
        assertArrayEquals(IntArray(77) { if (it == 0) 49406 else 49407 }, ids)
    }

    @Test
    fun malformedMergesIsOneClearError() {
        val error = runCatching { ClipTokenizer("{\"a\": 0}", "#version: 0.2\na b c\n") }.exceptionOrNull()
        assertEquals(
            "merges.txt line 2 is \"a b c\", not two tokens. Hint: use the merges.txt of the exported " +
                "pipeline's tokenizer folder.",
            error!!.message,
        )
    }
}
