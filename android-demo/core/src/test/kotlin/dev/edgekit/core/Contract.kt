package dev.edgekit.core

import com.google.gson.JsonObject
import com.google.gson.JsonParser
import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder

/** The contract vectors edgekit writes (tests/contract, `python -m tests.contract.generate`). */
object Contract {
    /** Tensors match to this absolute difference (the contract's tolerance); token ids exactly. */
    const val TENSOR_ATOL = 1e-6

    val dir: File by lazy {
        System.getProperty("edgekit.contract.dir")?.let { return@lazy File(it) }
        // Gradle runs tests in the module folder: android-demo/core -> ../../tests/contract
        var folder: File? = File("").absoluteFile
        while (folder != null) {
            val candidate = File(folder, "tests/contract")
            if (File(candidate, "manifest.json").isFile) return@lazy candidate
            folder = folder.parentFile
        }
        error("tests/contract not found: set -Dedgekit.contract.dir")
    }

    fun file(relative: String) = File(dir, relative)

    fun json(relative: String): JsonObject =
        JsonParser.parseString(file(relative).readText(Charsets.UTF_8)).asJsonObject

    fun floats(relative: String): FloatArray {
        val buffer = ByteBuffer.wrap(file(relative).readBytes()).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(buffer.remaining()).also { buffer.get(it) }
    }

    fun bytes(relative: String): ByteArray = file(relative).readBytes()

    /** The largest |a - b|, after checking the sizes agree. */
    fun maxAbsDifference(actual: FloatArray, expected: FloatArray): Double {
        check(actual.size == expected.size) { "${actual.size} values, expected ${expected.size}" }
        var worst = 0.0
        for (i in actual.indices) worst = maxOf(worst, Math.abs(actual[i].toDouble() - expected[i].toDouble()))
        return worst
    }
}
