package dev.edgekit.core

import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Test

class ManifestTest {
    private val text = Contract.file("manifest.json").readText()

    @Test
    fun readsTheClassifierManifestEdgekitWrote() {
        val manifest = Manifest.parse(text)
        val component = manifest.component()
        assertEquals("tiny-mobilevit-onnx-fp32", manifest.name)
        assertEquals("onnx", manifest.format)
        assertTrue(manifest.verified)
        assertEquals("model.onnx", manifest.artifactFile())
        assertEquals(TensorSpec("pixel_values", listOf(1, 3, 64, 64), "float32"), component.inputs[0])
        assertEquals(listOf(1, 10), component.outputs[0].shape)
        assertEquals(10, manifest.labels!!.size)
        assertEquals("passed", component.verificationStatus)
        assertNull(manifest.pipeline)
        val pre = manifest.preprocessing!!
        assertEquals(ResizeRule.SHORTEST_EDGE, pre.resize)
        assertEquals(Interpolation.BILINEAR, pre.interpolation)
        assertEquals(ChannelOrder.BGR, pre.channelOrder)
        assertEquals(64 to 64, pre.outputHeight to pre.outputWidth)
        assertEquals(64, manifest.sha256Of()!!.length)
    }

    @Test
    fun readsTheSchedulerSpecsOfThePipelineBlock() {
        val specs = Contract.json("scheduler/cases.json").getAsJsonObject("specs")
        val sd15 = SchedulerSpec.parse(specs.getAsJsonObject("sd15").toString())
        assertEquals(BetaSchedule.SCALED_LINEAR, sd15.betaSchedule)
        assertEquals(1, sd15.stepsOffset)
        assertEquals(false, sd15.setAlphaToOne)
    }

    @Test
    fun newerMajorVersionIsRefusedClearly() {
        val error = runCatching { Manifest.parse(text.replace("\"schema_version\": \"3.1\"", "\"schema_version\": \"4.0\"")) }
        assertEquals(
            "manifest.json is schema 4.0; this app reads 3.x (Hint: re-export the artifact with a matching " +
                "edgekit, or update the app).",
            error.exceptionOrNull()!!.message,
        )
    }

    @Test
    fun missingFieldNamesItsPath() {
        val broken = text.replace("\"crop_height\": 64,", "")
        val error = runCatching { Manifest.parse(broken) }.exceptionOrNull()
        assertEquals(
            "manifest.json is inconsistent: crop 'center' needs crop_height and crop_width.",
            error!!.message,
        )
        val badType = runCatching { Manifest.parse(text.replace("\"format\": \"onnx\"", "\"format\": 3")) }
        assertEquals("manifest.json has format = 3, expected a string.", badType.exceptionOrNull()!!.message)
        val notJson = runCatching { Manifest.parse("{not json") }.exceptionOrNull()
        assertTrue(notJson is EdgekitCoreException)
        assertTrue(notJson!!.message!!.startsWith("manifest.json is not JSON"))
    }

    @Test
    fun unknownFilterListsTheAllowedOnes() {
        val error = runCatching { Manifest.parse(text.replace("\"bilinear\"", "\"trilinear\"")) }.exceptionOrNull()
        assertEquals(
            "manifest.json has preprocessing.interpolation = \"trilinear\"; allowed: nearest, lanczos, " +
                "bilinear, bicubic, box, hamming.",
            error!!.message,
        )
    }
}
