package dev.edgekit.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.media.ExifInterface
import android.net.Uri
import java.io.ByteArrayInputStream
import java.io.IOException

/** Decoded, upright 8-bit RGB pixels, row-major (H, W, 3): what the core's Preprocessor takes. */
class RgbImage(val pixels: ByteArray, val width: Int, val height: Int)

/**
 * Step 1 of the manifest's preprocessing ("decode; apply the EXIF orientation; convert to 8-bit
 * RGB"), done by the platform; steps 2-6 are the core's Preprocessor. The result matches
 * Pillow's `exif_transpose` + `convert("RGB")` except where Android's JPEG decoder rounds its
 * IDCT differently from Pillow's libjpeg build (a grey level here and there on some photos).
 */
object PhotoDecoder {
    fun decode(resolver: ContentResolver, uri: Uri): RgbImage {
        val bytes = resolver.openInputStream(uri)?.use { it.readBytes() }
            ?: throw IOException("Could not open $uri.")
        return decode(bytes)
    }

    fun decode(bytes: ByteArray): RgbImage {
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            // Pillow's convert("RGB") drops alpha without compositing; a premultiplied bitmap
            // would darken every translucent pixel instead.
            inPremultiplied = false
            inScaled = false
        }
        val bitmap = BitmapFactory.decodeByteArray(bytes, 0, bytes.size, options)
            ?: throw IOException("Android cannot decode this file as an image.")
        val width = bitmap.width
        val height = bitmap.height
        val argb = IntArray(width * height)
        bitmap.getPixels(argb, 0, width, 0, 0, width, height)
        bitmap.recycle()
        val rgb = ByteArray(width * height * 3)
        for (i in argb.indices) {
            val color = argb[i]
            rgb[3 * i] = (color shr 16 and 0xFF).toByte()
            rgb[3 * i + 1] = (color shr 8 and 0xFF).toByte()
            rgb[3 * i + 2] = (color and 0xFF).toByte()
        }
        return orient(RgbImage(rgb, width, height), exifOrientation(bytes))
    }

    private fun exifOrientation(bytes: ByteArray): Int = try {
        ExifInterface(ByteArrayInputStream(bytes))
            .getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
    } catch (error: IOException) {
        // No readable EXIF block (PNG, a stripped JPEG): the pixels are already upright.
        ExifInterface.ORIENTATION_NORMAL
    }

    /** A small upright preview of [image] (every n-th pixel; for the screen, not the model). */
    fun preview(image: RgbImage, maxSide: Int = 768): Bitmap {
        val step = maxOf(1, maxOf(image.width, image.height) / maxSide)
        val width = image.width / step
        val height = image.height / step
        val argb = IntArray(width * height) { i ->
            val from = 3 * ((i / width) * step * image.width + (i % width) * step)
            val r = image.pixels[from].toInt() and 0xFF
            val g = image.pixels[from + 1].toInt() and 0xFF
            val b = image.pixels[from + 2].toInt() and 0xFF
            (0xFF shl 24) or (r shl 16) or (g shl 8) or b
        }
        return Bitmap.createBitmap(argb, width, height, Bitmap.Config.ARGB_8888)
    }

    /**
     * Turns the stored pixels upright the way Pillow's `ImageOps.exif_transpose` does: each
     * EXIF orientation (2-8) is an exact pixel permutation, no resampling.
     */
    fun orient(image: RgbImage, orientation: Int): RgbImage {
        val w = image.width
        val h = image.height
        // Source pixel for output pixel (x, y); the last four swap width and height.
        val source: (Int, Int) -> Int = when (orientation) {
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> { x, y -> y * w + (w - 1 - x) }
            ExifInterface.ORIENTATION_ROTATE_180 -> { x, y -> (h - 1 - y) * w + (w - 1 - x) }
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> { x, y -> (h - 1 - y) * w + x }
            ExifInterface.ORIENTATION_TRANSPOSE -> { x, y -> x * w + y }
            ExifInterface.ORIENTATION_ROTATE_90 -> { x, y -> (h - 1 - x) * w + y }
            ExifInterface.ORIENTATION_TRANSVERSE -> { x, y -> (h - 1 - x) * w + (w - 1 - y) }
            ExifInterface.ORIENTATION_ROTATE_270 -> { x, y -> x * w + (w - 1 - y) }
            else -> return image
        }
        val swapped = orientation >= ExifInterface.ORIENTATION_TRANSPOSE
        val outWidth = if (swapped) h else w
        val outHeight = if (swapped) w else h
        val out = ByteArray(image.pixels.size)
        for (y in 0 until outHeight) {
            for (x in 0 until outWidth) {
                val from = 3 * source(x, y)
                val to = 3 * (y * outWidth + x)
                out[to] = image.pixels[from]
                out[to + 1] = image.pixels[from + 1]
                out[to + 2] = image.pixels[from + 2]
            }
        }
        return RgbImage(out, outWidth, outHeight)
    }
}
