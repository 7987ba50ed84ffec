package dev.edgekit.core

import com.google.gson.JsonParser
import org.junit.Assert.assertEquals
import org.junit.Assert.assertFalse
import org.junit.Assert.assertNull
import org.junit.Test
import java.io.File
import java.nio.file.Files
import java.time.OffsetDateTime
import java.time.ZoneOffset

class BenchReportWriterTest {
    private val manifest = Manifest.parse(Contract.file("manifest.json").readText())
    private val samples = Contract.json("bench/samples.json").getAsJsonArray("cases")
        .map { it.asJsonObject }
        .first { it.get("name").asString == "noisy-150-runs" }
        .getAsJsonArray("samples_ms").map { it.asDouble }

    private fun report(): BenchReportWriter {
        val device = DeviceInfo(
            model = "Google Pixel 8",
            os = "Android 14 (API 34)",
            platform = "arm64-v8a",
            processor = "zuma",
            cpuCount = 9,
            soc = "Google Tensor G3",
            thermalStateStart = "none",
            thermalStateEnd = "moderate",
        )
        return BenchReportWriter(device, settings = mapOf("app" to "edgekit-android-demo", "mode" to "sustained"))
            .add(
                DeviceMeasurement(
                    manifest = manifest,
                    artifactPath = "/data/user/0/dev.edgekit.demo/files/models/${manifest.name}",
                    runtime = DeviceRuntime("onnxruntime", "1.22.0", threads = 4, delegate = "CPUExecutionProvider"),
                    loadMs = 85.5,
                    firstInferenceMs = 40.25,
                    warmupRuns = 5,
                    samplesMs = samples,
                    peakRssBytes = 210_000_000,
                    memoryIncreaseBytes = 35_000_000,
                    sustained = SustainedRun(
                        durationS = 120.0,
                        windowS = 30.0,
                        windowMediansMs = listOf(30.0, 31.0, 36.0, 41.0),
                        thermalStates = listOf("none", "light", "moderate", "moderate"),
                    ),
                ),
            )
            .add(
                DeviceMeasurement(
                    manifest = manifest,
                    artifactPath = null,
                    runtime = DeviceRuntime("onnxruntime", "1.22.0", threads = 1, delegate = null),
                    loadMs = null,
                    firstInferenceMs = null,
                    warmupRuns = null,
                    samplesMs = emptyList(),
                    error = "ORT could not create a session: out of memory",
                ),
            )
    }

    @Test
    fun writesASchemaReportWithDeviceRows() {
        val created = OffsetDateTime.of(2026, 11, 27, 1, 2, 3, 0, ZoneOffset.UTC)
        val target = System.getProperty("edgekit.report.out")?.let { File(it) }
            ?: File(Files.createTempDirectory("edgekit-report").toFile(), "bench.json")
        report().write(target, created)

        val json = JsonParser.parseString(target.readText()).asJsonObject
        assertEquals("2.1", json.get("schema_version").asString)
        assertEquals("2026-11-27T01:02:03+00:00", json.get("created_utc").asString)
        assertEquals("0.1.0", json.get("edgekit_version").asString) // the exporter's, from the manifest
        val machine = json.getAsJsonObject("machine")
        assertEquals("Google Pixel 8", machine.get("device").asString)
        assertEquals("Google Tensor G3", machine.get("soc").asString)
        assertEquals("none", machine.get("thermal_state_start").asString)
        assertEquals("moderate", machine.get("thermal_state_end").asString)
        // Schema 2.1 has fields for these: nothing of them is left in free-form settings.
        assertEquals(setOf("app", "mode"), json.getAsJsonObject("settings").keySet())
        val rows = json.getAsJsonArray("results").map { it.asJsonObject }
        val ok = rows[0]
        assertEquals("device", ok.get("source").asString)
        assertEquals(manifest.sha256Of(), ok.get("artifact_sha256").asString)
        assertFalse(ok.getAsJsonObject("runtime").has("compute_units")) // Core ML only
        // Fidelity from the component's verification, as host rows and the Swift core have it.
        val fidelity = ok.getAsJsonObject("fidelity")
        assertEquals("verified", fidelity.get("verification_status").asString)
        val verified = Contract.json("manifest.json").getAsJsonArray("components")[0].asJsonObject
            .getAsJsonObject("verification").getAsJsonArray("outputs")[0].asJsonObject
        assertEquals(verified.get("sqnr_db").asDouble, fidelity.get("worst_sqnr_db").asDouble, 0.0)
        assertEquals(verified.get("top1_agreement").asDouble, fidelity.get("top1_agreement").asDouble, 0.0)
        val latency = ok.getAsJsonObject("latency")
        assertEquals(BenchStats.of(samples).medianMs, latency.get("median_ms").asDouble, 0.0)
        // Consecutive windows of a sustained run are not interleaved rounds: 30 -> 41 ms is
        // throttling, reported as a slowdown, and it must not read as "rounds disagree".
        val sustained = ok.getAsJsonObject("sustained")
        assertEquals(listOf(30.0, 31.0, 36.0, 41.0), sustained.getAsJsonArray("window_medians_ms").map { it.asDouble })
        assertEquals(listOf("none", "light", "moderate", "moderate"), sustained.getAsJsonArray("thermal_states").map { it.asString })
        assertEquals(41.0 / 30.0, sustained.get("slowdown").asDouble, 0.0)
        assertEquals(120.0, sustained.get("duration_s").asDouble, 0.0)
        assertEquals(30.0, sustained.get("window_s").asDouble, 0.0)
        assertEquals(0, ok.getAsJsonArray("round_medians_ms").size())
        val reasons = ok.getAsJsonObject("reliability").getAsJsonArray("reasons").map { it.asString }
        assertFalse(reasons.toString(), reasons.any { it.startsWith("rounds disagree") })
        assertEquals("error", rows[1].get("status").asString)
        assertFalse(rows[1].has("latency"))
        assertFalse(File(target.parentFile, ".${target.name}.tmp").exists())
    }

    @Test
    fun slowdownIsLastWindowOverFirstAndNullWithOneWindow() {
        assertEquals(0.8, SustainedRun(60.0, 30.0, listOf(50.0, 40.0)).slowdown!!, 1e-15)
        assertNull(SustainedRun(30.0, 30.0, listOf(50.0)).slowdown)
        assertNull(SustainedRun(0.0, 30.0, emptyList()).slowdown)
    }

    @Test
    fun interleavedRoundsThatDisagreeStillMakeARowUnreliable() {
        val flat = List(20) { 10.0 }
        val json = BenchReportWriter(DeviceInfo("Phone", "Android 14 (API 34)", "android-arm64-v8a", "cpu", 8))
            .add(
                DeviceMeasurement(
                    manifest = manifest,
                    artifactPath = null,
                    runtime = DeviceRuntime("litert", "2.3.0", threads = 4, delegate = "xnnpack"),
                    loadMs = 1.0,
                    firstInferenceMs = 1.0,
                    warmupRuns = 0,
                    samplesMs = flat,
                    roundMediansMs = listOf(10.0, 11.0, 14.0),
                ),
            )
            .toJson()
        val row = JsonParser.parseString(json).asJsonObject.getAsJsonArray("results")[0].asJsonObject
        val reasons = row.getAsJsonObject("reliability").getAsJsonArray("reasons").map { it.asString }
        assertEquals(listOf("rounds disagree by 36%"), reasons)
        assertFalse(row.has("sustained"))
        assertFalse(JsonParser.parseString(json).asJsonObject.getAsJsonObject("machine").has("soc"))
    }
}
