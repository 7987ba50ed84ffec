package dev.edgekit.core

import kotlin.math.ceil
import kotlin.math.cos
import kotlin.math.sin

/**
 * Pillow's `Image.resize` for 8-bit RGB images, ported operation for operation so the pixels
 * are identical, not merely close (edgekit.preprocess resizes with Pillow, and the contract
 * vectors compare the resulting tensors). Sources: Pillow's src/_imaging.c `_resize`,
 * src/libImaging/Resample.c and Geometry.c `ImagingScaleAffine`.
 *
 * - Same size: a copy. NEAREST: an affine scale whose source coordinate is accumulated by
 *   repeated addition (not multiplied out), truncated to an int.
 * - Every other filter: two separable passes, horizontal first, each rounding to 8 bits.
 *   Coefficients are computed in double, normalised so each output pixel's sum is 1, then
 *   turned into fixed point with 22 fractional bits (PRECISION_BITS = 32 - 8 - 2) and rounded
 *   half away from zero; each sum starts at 0.5 in that fixed point and is clipped to 0..255.
 */
internal object PillowResample {
    private const val PRECISION_BITS = 32 - 8 - 2
    private const val CHANNELS = 3

    private class Filter(val support: Double, val weight: (Double) -> Double)

    private fun filterFor(interpolation: Interpolation): Filter = when (interpolation) {
        Interpolation.BOX -> Filter(0.5) { x -> if (x > -0.5 && x <= 0.5) 1.0 else 0.0 }
        Interpolation.BILINEAR -> Filter(1.0) { x ->
            val ax = if (x < 0.0) -x else x
            if (ax < 1.0) 1.0 - ax else 0.0
        }
        Interpolation.HAMMING -> Filter(1.0) { x -> hamming(x) }
        Interpolation.BICUBIC -> Filter(2.0) { x -> bicubic(x) }
        Interpolation.LANCZOS -> Filter(3.0) { x ->
            if (-3.0 <= x && x < 3.0) sinc(x) * sinc(x / 3) else 0.0
        }
        Interpolation.NEAREST -> error("NEAREST is not a convolution filter")
    }

    private fun hamming(x0: Double): Double {
        var x = if (x0 < 0.0) -x0 else x0
        if (x == 0.0) return 1.0
        if (x >= 1.0) return 0.0
        x *= Math.PI
        // Pillow writes 0.54f and 0.46f: float constants, widened to double.
        return sin(x) / x * (0.54f.toDouble() + 0.46f.toDouble() * cos(x))
    }

    private fun bicubic(x0: Double): Double {
        val a = -0.5
        val x = if (x0 < 0.0) -x0 else x0
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
        if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a
        return 0.0
    }

    private fun sinc(x0: Double): Double {
        if (x0 == 0.0) return 1.0
        val x = x0 * Math.PI
        return sin(x) / x
    }

    /** `rgb` is height x width x 3 bytes, row-major; returns outHeight x outWidth x 3. */
    fun resize(
        rgb: ByteArray,
        height: Int,
        width: Int,
        outHeight: Int,
        outWidth: Int,
        interpolation: Interpolation,
    ): ByteArray {
        require(outHeight >= 1 && outWidth >= 1) { "height and width must be > 0" }
        if (outHeight == height && outWidth == width) return rgb.copyOf()
        if (interpolation == Interpolation.NEAREST) {
            return nearest(rgb, height, width, outHeight, outWidth)
        }
        val filter = filterFor(interpolation)
        var image = rgb
        var imageWidth = width
        if (outWidth != width) {
            image = horizontalPass(image, height, width, outWidth, coefficients(width, outWidth, filter))
            imageWidth = outWidth
        }
        if (outHeight != height) {
            image = verticalPass(image, height, imageWidth, outHeight, coefficients(height, outHeight, filter))
        }
        return image
    }

    /** Per output pixel: the first input index, how many inputs, and fixed-point weights. */
    private class Coefficients(val ksize: Int, val bounds: IntArray, val weights: IntArray)

    private fun coefficients(inSize: Int, outSize: Int, filter: Filter): Coefficients {
        // Pillow passes the box as floats: (float) inSize - 0f, then widens to double.
        val scale = (inSize.toFloat() - 0f).toDouble() / outSize
        val filterScale = if (scale < 1.0) 1.0 else scale
        val support = filter.support * filterScale
        val ksize = ceil(support).toInt() * 2 + 1
        val weights = DoubleArray(outSize * ksize)
        val bounds = IntArray(outSize * 2)
        val invFilterScale = 1.0 / filterScale
        for (xx in 0 until outSize) {
            val center = 0.0 + (xx + 0.5) * scale
            var ww = 0.0
            var xmin = (center - support + 0.5).toInt() // C's (int): truncation toward zero
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            val base = xx * ksize
            for (x in 0 until xmax) {
                val w = filter.weight((x + xmin - center + 0.5) * invFilterScale)
                weights[base + x] = w
                ww += w
            }
            if (ww != 0.0) {
                for (x in 0 until xmax) weights[base + x] /= ww
            }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        val one = (1 shl PRECISION_BITS).toDouble()
        val fixed = IntArray(weights.size) { i ->
            val w = weights[i]
            if (w < 0) (-0.5 + w * one).toInt() else (0.5 + w * one).toInt()
        }
        return Coefficients(ksize, bounds, fixed)
    }

    private fun clip8(sum: Int): Byte {
        val value = sum shr PRECISION_BITS // arithmetic shift, as Pillow's lookup table indexes
        return (if (value < 0) 0 else if (value > 255) 255 else value).toByte()
    }

    private fun horizontalPass(
        input: ByteArray, height: Int, width: Int, outWidth: Int, c: Coefficients,
    ): ByteArray {
        val output = ByteArray(height * outWidth * CHANNELS)
        val half = 1 shl (PRECISION_BITS - 1)
        for (y in 0 until height) {
            val rowIn = y * width * CHANNELS
            val rowOut = y * outWidth * CHANNELS
            for (xx in 0 until outWidth) {
                val xmin = c.bounds[xx * 2]
                val count = c.bounds[xx * 2 + 1]
                val k = xx * c.ksize
                var s0 = half
                var s1 = half
                var s2 = half
                for (x in 0 until count) {
                    val p = rowIn + (x + xmin) * CHANNELS
                    val w = c.weights[k + x]
                    s0 += (input[p].toInt() and 0xFF) * w
                    s1 += (input[p + 1].toInt() and 0xFF) * w
                    s2 += (input[p + 2].toInt() and 0xFF) * w
                }
                val o = rowOut + xx * CHANNELS
                output[o] = clip8(s0)
                output[o + 1] = clip8(s1)
                output[o + 2] = clip8(s2)
            }
        }
        return output
    }

    private fun verticalPass(
        input: ByteArray, height: Int, width: Int, outHeight: Int, c: Coefficients,
    ): ByteArray {
        val output = ByteArray(outHeight * width * CHANNELS)
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until outHeight) {
            val ymin = c.bounds[yy * 2]
            val count = c.bounds[yy * 2 + 1]
            val k = yy * c.ksize
            for (xx in 0 until width) {
                var s0 = half
                var s1 = half
                var s2 = half
                for (y in 0 until count) {
                    val p = ((y + ymin) * width + xx) * CHANNELS
                    val w = c.weights[k + y]
                    s0 += (input[p].toInt() and 0xFF) * w
                    s1 += (input[p + 1].toInt() and 0xFF) * w
                    s2 += (input[p + 2].toInt() and 0xFF) * w
                }
                val o = (yy * width + xx) * CHANNELS
                output[o] = clip8(s0)
                output[o + 1] = clip8(s1)
                output[o + 2] = clip8(s2)
            }
        }
        return output
    }

    /** Geometry.c ImagingScaleAffine with a = (in/out, 0, 0, 0, in/out, 0), fill = 1. */
    private fun nearest(rgb: ByteArray, height: Int, width: Int, outHeight: Int, outWidth: Int): ByteArray {
        val a0 = (width.toFloat() - 0f).toDouble() / outWidth
        val a4 = (height.toFloat() - 0f).toDouble() / outHeight
        val xintab = IntArray(outWidth)
        var xo = 0.0 + a0 * 0.5
        var xmin = outWidth
        var xmax = 0
        for (x in 0 until outWidth) {
            val xin = if (xo < 0.0) -1 else xo.toInt()
            if (xin in 0 until width) {
                xmax = x + 1
                if (x < xmin) xmin = x
                xintab[x] = xin
            }
            xo += a0
        }
        val output = ByteArray(outHeight * outWidth * CHANNELS) // fill = 1: zeros first
        var yo = 0.0 + a4 * 0.5
        for (y in 0 until outHeight) {
            val yi = if (yo < 0.0) -1 else yo.toInt()
            if (yi in 0 until height) {
                for (x in xmin until xmax) {
                    System.arraycopy(rgb, (yi * width + xintab[x]) * CHANNELS, output, (y * outWidth + x) * CHANNELS, CHANNELS)
                }
            }
            yo += a4
        }
        return output
    }
}
