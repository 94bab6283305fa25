//! Checked strided views of `f32` matrices: what every panel and softmax kernel takes instead
//! of a slice with an offset, a stride and two lengths.
//!
//! Invariant: a view's constructor asserts that every element it names lies inside its slice
//! (`off + (rows − 1)·stride + cols ≤ len` when it names any), so a kernel given a view may
//! read (or, for [`MatMut`], write) `rows × cols` elements from its start at `stride` without
//! further checks.

/// `rows × cols` elements of a slice `S` (`&[f32]` or `&mut [f32]`), row `r` at
/// `data[off + r·stride ..][..cols]`. Use it as [`MatRef`] or [`MatMut`].
#[derive(Clone, Copy, Debug)]
pub struct Mat<S> {
    data: S,
    off: usize,
    stride: usize,
    rows: usize,
    cols: usize,
}

/// A read-only view ([`Mat`] of `&[f32]`).
pub type MatRef<'a> = Mat<&'a [f32]>;
/// A view to write through ([`Mat`] of `&mut [f32]`).
pub type MatMut<'a> = Mat<&'a mut [f32]>;

/// Last index named by `rows` rows of `cols` elements at `off` with `stride`, plus one; 0 when
/// the view names nothing.
fn span(off: usize, stride: usize, rows: usize, cols: usize) -> usize {
    if rows == 0 || cols == 0 {
        return 0;
    }
    // an overflow is a caller's bug, caught rather than wrapped past the check
    (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(off))
        .and_then(|x| x.checked_add(cols))
        .expect("a matrix view whose extent overflows usize")
}

impl<S: AsRef<[f32]>> Mat<S> {
    /// The view; panics when an element it names lies outside `data`.
    #[inline]
    pub fn new(data: S, off: usize, stride: usize, rows: usize, cols: usize) -> Self {
        let len = data.as_ref().len();
        assert!(
            span(off, stride, rows, cols) <= len,
            "a {rows}×{cols} view at {off} with stride {stride} outside {len} elements"
        );
        Mat {
            data,
            off,
            stride,
            rows,
            cols,
        }
    }

    /// Rows of `cols` elements one after another from the start of `data`.
    #[inline]
    pub fn dense(data: S, rows: usize, cols: usize) -> Self {
        Mat::new(data, 0, cols, rows, cols)
    }

    /// How many rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// How many elements a row.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Elements from one row's start to the next's.
    #[inline]
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> &[f32] {
        assert!(r < self.rows);
        &self.data.as_ref()[self.off + r * self.stride..][..self.cols]
    }

    /// Where row 0 starts; `rows × cols` elements at `stride` from here are readable.
    #[inline]
    pub(crate) fn ptr(&self) -> *const f32 {
        // `wrapping_add`: a view of nothing may sit at `off == len` or beyond
        self.data.as_ref().as_ptr().wrapping_add(self.off)
    }
}

impl<S: AsMut<[f32]>> Mat<S> {
    /// Row `r`, to write.
    #[inline]
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        assert!(r < self.rows);
        &mut self.data.as_mut()[self.off + r * self.stride..][..self.cols]
    }

    /// Where row 0 starts; `rows × cols` elements at `stride` from here are writable.
    #[inline]
    pub(crate) fn ptr_mut(&mut self) -> *mut f32 {
        self.data.as_mut().as_mut_ptr().wrapping_add(self.off)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_check_their_extent() {
        let x = [0.0f32; 11];
        let v = MatRef::new(&x, 1, 4, 3, 2); // the last element named is x[1 + 8 + 1]
        assert_eq!((v.rows(), v.cols(), v.stride()), (3, 2, 4));
        assert_eq!(v.row(2).len(), 2);
        assert!(std::panic::catch_unwind(|| MatRef::new(&x, 2, 4, 3, 2)).is_err());
        assert!(std::panic::catch_unwind(|| MatRef::new(&x, 0, usize::MAX, 3, 2)).is_err());
        assert!(std::panic::catch_unwind(|| v.row(3)).is_err());
        // a view of nothing may sit anywhere
        let e = MatRef::new(&x, 99, 4, 0, 2);
        assert_eq!(e.rows(), 0);
        let mut y = [0.0f32; 6];
        let mut m = MatMut::dense(&mut y, 2, 3);
        m.row_mut(1)[2] = 5.0;
        assert_eq!(y[5], 5.0);
        assert!(std::panic::catch_unwind(move || {
            let mut z = [0.0f32; 5];
            MatMut::dense(&mut z, 2, 3);
        })
        .is_err());
    }
}
