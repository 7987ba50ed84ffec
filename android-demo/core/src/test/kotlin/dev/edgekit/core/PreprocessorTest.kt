package dev.edgekit.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class PreprocessorTest {
    private val cases = Contract.json("preprocess/cases.json").getAsJsonArray("cases").map { it.asJsonObject }

    @Test
    fun everyCaseGivesEdgekitsTensor() {
        val failures = ArrayList<String>()
        for (case in cases) {
            val name = case.get("name").asString
            val preprocessing = Preprocessing.parse(case.getAsJsonObject("preprocessing").toString())
            val rgb = Contract.bytes("preprocess/" + case.get("rgb").asString)
            val tensor = Preprocessor(preprocessing).run(rgb, case.get("height").asInt, case.get("width").asInt)
            val expectedShape = case.getAsJsonArray("shape").map { it.asInt }.toIntArray()
            assertArrayEquals(name, expectedShape, tensor.shape)
            val expected = Contract.floats("preprocess/" + case.get("input").asString)
            val worst = Contract.maxAbsDifference(tensor.data, expected)
            // Pillow's integer resample is reproduced exactly: every value should be identical.
            val differing = tensor.data.indices.count { tensor.data[it] != expected[it] }
            if (worst > Contract.TENSOR_ATOL || differing > 0) {
                failures.add("$name: $differing values differ, worst by $worst")
            }
        }
        assertTrue(failures.joinToString("; "), failures.isEmpty())
    }

    @Test
    fun casesCoverEveryFilter() {
        val used = cases.map { Preprocessing.parse(it.getAsJsonObject("preprocessing").toString()).interpolation }.toSet()
        assertEquals(Interpolation.values().toSet(), used)
    }

    @Test
    fun shortestEdgeTruncatesLikeHuggingFace() {
        val block = Preprocessing.parse(
            """{"resize": "shortest-edge", "resize_shortest_edge": 288, "interpolation": "bilinear",
               "crop": "center", "crop_height": 256, "crop_width": 256, "rescale_factor": 0.00392156862745098,
               "mean": [0, 0, 0], "std": [1, 1, 1], "channel_order": "BGR"}""",
        )
        // 451x300 at 288: 288 * 451 / 300 = 432.96 -> 432, not 433.
        assertEquals(288 to 432, Preprocessor(block).resizedSize(300, 451))
        assertEquals(432 to 288, Preprocessor(block).resizedSize(451, 300))
    }

    @Test
    fun centerCropPadsSmallImagesWithZeros() {
        // A 1x2 image into a 3x3 window: one zero row above (ceil(2 / 2)), one column left.
        val pixels = byteArrayOf(1, 2, 3, 4, 5, 6)
        val out = Preprocessor.centerCrop(pixels, 1, 2, 3, 3)
        val expected = ByteArray(27).also {
            byteArrayOf(1, 2, 3, 4, 5, 6).copyInto(it, destinationOffset = (1 * 3 + 1) * 3)
        }
        assertArrayEquals(expected, out)
    }

    @Test
    fun wrongPixelCountIsOneClearError() {
        val block = Preprocessing.parse(cases[0].getAsJsonObject("preprocessing").toString())
        val error = runCatching { Preprocessor(block).run(ByteArray(10), 2, 2) }.exceptionOrNull()
        assertTrue(error is EdgekitCoreException)
        assertEquals(
            "Preprocessor: 10 bytes is not a 2x2 RGB image (12 bytes). Hint: pass decoded RGB8 pixels, 3 bytes each.",
            error!!.message,
        )
    }

    @Test
    fun inconsistentBlockIsRefused() {
        val error = runCatching {
            Preprocessing.parse(
                """{"resize": "shortest-edge", "resize_shortest_edge": 72, "interpolation": "bilinear",
                   "crop": "none", "rescale_factor": 0.5, "mean": [0, 0, 0], "std": [1, 1, 1], "channel_order": "RGB"}""",
            )
        }.exceptionOrNull()
        assertEquals(
            "The preprocessing block is inconsistent: crop 'none' needs resize 'exact', so every photo gets one size.",
            error!!.message,
        )
    }
}
