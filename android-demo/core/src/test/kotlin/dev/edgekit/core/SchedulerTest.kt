package dev.edgekit.core

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertTrue
import org.junit.Test

class SchedulerTest {
    private val data = Contract.json("scheduler/cases.json")
    private val specs = data.getAsJsonObject("specs").entrySet()
        .associate { (name, spec) -> name to SchedulerSpec.parse(spec.toString()) }

    @Test
    fun timestepsEqualEdgekits() {
        for (element in data.getAsJsonArray("timesteps")) {
            val case = element.asJsonObject
            val spec = case.get("spec").asString
            val steps = case.get("steps").asInt
            val expected = case.getAsJsonArray("timesteps").map { it.asInt }.toIntArray()
            assertArrayEquals("$spec, $steps steps", expected, DdimScheduler(specs.getValue(spec)).setTimesteps(steps))
        }
    }

    @Test
    fun oneDenoisingStepEqualsEdgekits() {
        for (element in data.getAsJsonArray("steps")) {
            val case = element.asJsonObject
            val name = case.get("name").asString
            val scheduler = DdimScheduler(specs.getValue(case.get("spec").asString))
            scheduler.setTimesteps(case.get("steps").asInt)
            val prev = scheduler.step(
                Contract.floats("scheduler/" + case.get("model_output").asString),
                case.get("timestep").asInt,
                Contract.floats("scheduler/" + case.get("sample").asString),
            )
            val expected = Contract.floats("scheduler/" + case.get("prev_sample").asString)
            val worst = Contract.maxAbsDifference(prev, expected)
            assertTrue("$name: worst difference $worst", worst <= Contract.TENSOR_ATOL)
        }
    }

    @Test
    fun guidanceEqualsEdgekits() {
        for (element in data.getAsJsonArray("guidance")) {
            val case = element.asJsonObject
            val guided = classifierFreeGuidance(
                Contract.floats("scheduler/" + case.get("uncond").asString),
                Contract.floats("scheduler/" + case.get("cond").asString),
                case.get("scale").asFloat,
            )
            val expected = Contract.floats("scheduler/" + case.get("guided").asString)
            assertTrue(Contract.maxAbsDifference(guided, expected) <= Contract.TENSOR_ATOL)
        }
    }

    @Test
    fun tooManyStepsIsOneClearError() {
        val error = runCatching { DdimScheduler(specs.getValue("sd15")).setTimesteps(1001) }.exceptionOrNull()
        assertEquals(
            "--steps 1001 is not allowed: the schedule has 1000 training timesteps. Hint: use 1 to 1000 steps.",
            error!!.message,
        )
    }
}
