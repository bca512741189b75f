//! Storage types of GEMM inputs on the host: encoding f64 test values into the bytes the
//! GPU reads (f64, f32, f16, bf16, FP8 E4M3 / E5M2) and decoding them back exactly, so the
//! host reference computes with precisely the values the tensor cores saw.

use crate::case::Dtype;
use half::{bf16, f16};

/// Decodes an OCP FP8 E4M3 byte (bias 7, no infinities, S.1111.111 is NaN, max 448).
pub fn e4m3_to_f64(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0F) as i32;
    let man = (b & 0x07) as f64;
    if exp == 0x0F && (b & 0x07) == 0x07 {
        return f64::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f64.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f64.powi(exp - 7)
    }
}

/// Decodes an OCP FP8 E5M2 byte (bias 15, IEEE-like infinities and NaNs, max 57344).
pub fn e5m2_to_f64(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 2) & 0x1F) as i32;
    let man = (b & 0x03) as f64;
    match exp {
        0x1F if man == 0.0 => sign * f64::INFINITY,
        0x1F => f64::NAN,
        0 => sign * man / 4.0 * 2f64.powi(-14),
        _ => sign * (1.0 + man / 4.0) * 2f64.powi(exp - 15),
    }
}

/// Bytes per element of a GEMM storage type.
pub fn storage_bytes(d: Dtype) -> usize {
    match d {
        Dtype::F64 => 8,
        Dtype::F32 | Dtype::Tf32 => 4,
        Dtype::F16 | Dtype::Bf16 => 2,
        _ => 1,
    }
}

/// Draws a random value of storage type `d` from `u` (uniform in [0, 1)): uniform in
/// [-1, 1) rounded to the type; for FP8, a uniformly chosen finite code with |x| <= 1 (so
/// every exponent of the format appears, not just the top few).
pub fn random_value(d: Dtype, u: f64, out: &mut [u8]) -> f64 {
    let x = 2.0 * u - 1.0;
    match d {
        Dtype::F64 => {
            out.copy_from_slice(&x.to_le_bytes());
            x
        }
        Dtype::F32 | Dtype::Tf32 => {
            let v = x as f32;
            out.copy_from_slice(&v.to_le_bytes());
            v as f64
        }
        Dtype::F16 => {
            let v = f16::from_f64(x);
            out.copy_from_slice(&v.to_bits().to_le_bytes());
            v.to_f64()
        }
        Dtype::Bf16 => {
            let v = bf16::from_f64(x);
            out.copy_from_slice(&v.to_bits().to_le_bytes());
            v.to_f64()
        }
        Dtype::Fp8E4m3 | Dtype::Fp8E5m2 => {
            // Codes with |x| <= 1: E4M3 0x00..=0x38, E5M2 0x00..=0x3C, either sign.
            let top = if d == Dtype::Fp8E4m3 { 0x38u32 } else { 0x3C };
            let r = (u * (2 * (top + 1)) as f64) as u32;
            let code = (r % (top + 1)) as u8 | if r > top { 0x80 } else { 0 };
            out[0] = code;
            if d == Dtype::Fp8E4m3 {
                e4m3_to_f64(code)
            } else {
                e5m2_to_f64(code)
            }
        }
        _ => f64::NAN,
    }
}

/// Decodes one stored element of an output type.
pub fn decode(d: Dtype, b: &[u8]) -> f64 {
    match d {
        Dtype::F64 => f64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])),
        Dtype::F32 | Dtype::Tf32 => f32::from_le_bytes(b[..4].try_into().unwrap_or([0; 4])) as f64,
        Dtype::F16 => f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
        Dtype::Bf16 => bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f64(),
        Dtype::Fp8E4m3 => e4m3_to_f64(b[0]),
        Dtype::Fp8E5m2 => e5m2_to_f64(b[0]),
        _ => f64::NAN,
    }
}

/// Unit roundoff (half the machine epsilon) of a type's significand.
pub fn unit_roundoff(d: Dtype) -> f64 {
    match d {
        Dtype::F64 => f64::EPSILON / 2.0,
        Dtype::F32 => f32::EPSILON as f64 / 2.0,
        Dtype::Tf32 => 2f64.powi(-11),
        Dtype::F16 => 2f64.powi(-11),
        Dtype::Bf16 => 2f64.powi(-8),
        Dtype::Fp8E4m3 => 2f64.powi(-4),
        Dtype::Fp8E5m2 => 2f64.powi(-3),
        _ => f64::NAN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_decodes_the_ocp_tables() {
        assert_eq!(e4m3_to_f64(0x7E), 448.0);
        assert_eq!(e4m3_to_f64(0x38), 1.0);
        assert_eq!(e4m3_to_f64(0x01), 2f64.powi(-9)); // smallest subnormal
        assert_eq!(e4m3_to_f64(0xB8), -1.0);
        assert!(e4m3_to_f64(0x7F).is_nan());
        assert_eq!(e5m2_to_f64(0x7B), 57344.0);
        assert_eq!(e5m2_to_f64(0x3C), 1.0);
        assert_eq!(e5m2_to_f64(0x01), 2f64.powi(-16));
        assert_eq!(e5m2_to_f64(0x7C), f64::INFINITY);
        assert!(e5m2_to_f64(0x7D).is_nan());
    }

    #[test]
    fn random_values_round_trip_and_stay_in_range() {
        for d in [
            Dtype::F64,
            Dtype::F32,
            Dtype::F16,
            Dtype::Bf16,
            Dtype::Fp8E4m3,
            Dtype::Fp8E5m2,
        ] {
            let mut seen_negative = false;
            for i in 0..2000 {
                let u = (i as f64 + 0.5) / 2000.0;
                let mut b = vec![0u8; storage_bytes(d)];
                let v = random_value(d, u, &mut b);
                assert!(v.abs() <= 1.0 && v.is_finite(), "{d:?} {v}");
                assert_eq!(decode(d, &b), v, "{d:?}");
                seen_negative |= v < 0.0;
            }
            assert!(seen_negative, "{d:?}");
        }
    }
}
