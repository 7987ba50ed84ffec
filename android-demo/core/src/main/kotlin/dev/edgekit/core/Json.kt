package dev.edgekit.core

import com.google.gson.JsonArray
import com.google.gson.JsonElement
import com.google.gson.JsonObject
import com.google.gson.JsonParser
import com.google.gson.JsonSyntaxException

/** Bad input to the core (a manifest, a tokenizer file, a tensor of the wrong size): one
 * line saying what was wrong, which value, and what to do, like edgekit's own errors. */
class EdgekitCoreException(message: String) : IllegalArgumentException(message)

/** Reading edgekit's JSON files with paths in every error ("preprocessing.crop_height"). */
internal class JsonReader(private val what: String) {
    fun parseObject(text: String): JsonObject {
        val element = try {
            JsonParser.parseString(text)
        } catch (e: JsonSyntaxException) {
            fail("is not JSON (${e.cause?.message ?: e.message})")
        }
        if (!element.isJsonObject) fail("is not a JSON object")
        return element.asJsonObject
    }

    fun fail(problem: String): Nothing = throw EdgekitCoreException("$what $problem.")

    private fun field(obj: JsonObject, key: String, path: String): JsonElement? {
        val value = obj.get(key)
        return if (value == null || value.isJsonNull) null else value
    }

    private fun required(obj: JsonObject, key: String, path: String): JsonElement =
        field(obj, key, path) ?: fail("has no ${join(path, key)}")

    fun string(obj: JsonObject, key: String, path: String = ""): String =
        optString(obj, key, path) ?: fail("has no ${join(path, key)}")

    fun optString(obj: JsonObject, key: String, path: String = ""): String? {
        val value = field(obj, key, path) ?: return null
        if (!value.isJsonPrimitive || !value.asJsonPrimitive.isString) {
            fail("has ${join(path, key)} = $value, expected a string")
        }
        return value.asString
    }

    fun int(obj: JsonObject, key: String, path: String = ""): Int =
        optInt(obj, key, path) ?: fail("has no ${join(path, key)}")

    fun optInt(obj: JsonObject, key: String, path: String = ""): Int? {
        val value = field(obj, key, path) ?: return null
        val number = number(value, join(path, key))
        if (number != Math.floor(number) || Math.abs(number) > Int.MAX_VALUE) {
            fail("has ${join(path, key)} = $value, expected an integer")
        }
        return number.toInt()
    }

    fun double(obj: JsonObject, key: String, path: String = ""): Double =
        optDouble(obj, key, path) ?: fail("has no ${join(path, key)}")

    fun optDouble(obj: JsonObject, key: String, path: String = ""): Double? =
        field(obj, key, path)?.let { number(it, join(path, key)) }

    fun bool(obj: JsonObject, key: String, path: String = ""): Boolean =
        optBool(obj, key, path) ?: fail("has no ${join(path, key)}")

    fun optBool(obj: JsonObject, key: String, path: String = ""): Boolean? {
        val value = field(obj, key, path) ?: return null
        if (!value.isJsonPrimitive || !value.asJsonPrimitive.isBoolean) {
            fail("has ${join(path, key)} = $value, expected true or false")
        }
        return value.asBoolean
    }

    fun obj(obj: JsonObject, key: String, path: String = ""): JsonObject =
        optObj(obj, key, path) ?: fail("has no ${join(path, key)}")

    fun optObj(obj: JsonObject, key: String, path: String = ""): JsonObject? {
        val value = field(obj, key, path) ?: return null
        if (!value.isJsonObject) fail("has ${join(path, key)} = $value, expected an object")
        return value.asJsonObject
    }

    fun array(obj: JsonObject, key: String, path: String = ""): JsonArray =
        optArray(obj, key, path) ?: fail("has no ${join(path, key)}")

    fun optArray(obj: JsonObject, key: String, path: String = ""): JsonArray? {
        val value = field(obj, key, path) ?: return null
        if (!value.isJsonArray) fail("has ${join(path, key)} = $value, expected a list")
        return value.asJsonArray
    }

    fun objects(obj: JsonObject, key: String, path: String = ""): List<JsonObject> =
        array(obj, key, path).mapIndexed { i, element ->
            if (!element.isJsonObject) fail("has ${join(path, key)}[$i] = $element, expected an object")
            element.asJsonObject
        }

    fun ints(obj: JsonObject, key: String, path: String = ""): List<Int> =
        array(obj, key, path).mapIndexed { i, element ->
            val number = number(element, "${join(path, key)}[$i]")
            if (number != Math.floor(number)) fail("has ${join(path, key)}[$i] = $element, expected an integer")
            number.toInt()
        }

    fun doubles(obj: JsonObject, key: String, path: String = ""): List<Double> =
        array(obj, key, path).mapIndexed { i, element -> number(element, "${join(path, key)}[$i]") }

    fun strings(obj: JsonObject, key: String, path: String = ""): List<String> =
        array(obj, key, path).mapIndexed { i, element ->
            if (!element.isJsonPrimitive || !element.asJsonPrimitive.isString) {
                fail("has ${join(path, key)}[$i] = $element, expected a string")
            }
            element.asString
        }

    /** An enum by its JSON spelling; the error lists the allowed spellings. */
    fun <T> choice(obj: JsonObject, key: String, path: String, options: Map<String, T>): T {
        val value = string(obj, key, path)
        return options[value]
            ?: fail("has ${join(path, key)} = \"$value\"; allowed: ${options.keys.joinToString(", ")}")
    }

    private fun number(element: JsonElement, where: String): Double {
        if (!element.isJsonPrimitive || !element.asJsonPrimitive.isNumber) {
            fail("has $where = $element, expected a number")
        }
        // Gson reads the literal text; Double.parseDouble rounds it correctly, as Python's json
        // does, so 0.00392156862745098 is the same double on both sides.
        return element.asDouble
    }

    private fun join(path: String, key: String) = if (path.isEmpty()) key else "$path.$key"
}
