// SPDX-License-Identifier: GPL-2.0

//! Device classes, class devices and their sysfs attributes.
//!
//! C headers: [`include/linux/device/class.h`](srctree/include/linux/device/class.h) and
//! [`include/linux/device.h`](srctree/include/linux/device.h)
//!
//! A [`Class`] appears as `/sys/class/<name>`. A [`ClassDevice`] is a `struct device` in that
//! class, with a device number (so devtmpfs makes `/dev/<name>`), a parent and driver data of
//! type `Arc<T>`. An [`Attribute`] implementation describes a read-only sysfs file whose
//! `show` callback gets the driver data; [`ClassDevice::add_attribute`] creates it later in the
//! device's life, followed by a `KOBJ_CHANGE` uevent so udev sees it.
//!
//! # Lifetimes
//!
//! The class is created with `class_create()` and freed by its own release callback, so a
//! reference held by sysfs can outlive [`Class`] safely. A [`Class`] is shared through an
//! [`Arc`], and each [`ClassDevice`] holds a reference: `class_destroy()` runs only once the
//! last device of the class is unregistered (a device's release reads its class). The driver
//! data is released only after `device_unregister()` has returned, which waits for running
//! `show` callbacks.

use crate::{
    bindings,
    chrdev::DevT,
    device,
    error::{from_err_ptr, to_result, Result},
    prelude::*,
    str::{CStr, CString},
    sync::{Arc, UniqueArc},
    types::ForeignOwnable,
};
use core::{marker::PhantomData, ptr::NonNull};

/// A device class, unregistered when the last [`Arc`] to it goes (each [`ClassDevice`] holds
/// one).
///
/// # Invariants
///
/// `ptr` was returned by `class_create()` and not destroyed yet.
pub struct Class {
    ptr: NonNull<bindings::class>,
}

// SAFETY: The class functions may be called from any thread.
unsafe impl Send for Class {}
// SAFETY: `&Class` only hands the pointer to C functions that lock internally.
unsafe impl Sync for Class {}

impl Class {
    /// Creates `/sys/class/<name>`.
    pub fn new(name: &'static CStr) -> Result<Arc<Self>> {
        // Allocate first: nothing can fail once the class exists.
        let slot = UniqueArc::new_uninit(GFP_KERNEL)?;
        // SAFETY: `name` is static, as `class_create()` requires.
        let ptr = from_err_ptr(unsafe { bindings::class_create(name.as_char_ptr()) })?;
        let Some(ptr) = NonNull::new(ptr) else {
            return Err(ENOMEM);
        };
        Ok(slot.write(Self { ptr }).into())
    }
}

impl Drop for Class {
    fn drop(&mut self) {
        // SAFETY: By the type invariant.
        unsafe { bindings::class_destroy(self.ptr.as_ptr()) };
    }
}

/// A read-only sysfs attribute of a [`ClassDevice<T>`].
pub trait Attribute<T>: 'static {
    /// The file name.
    const NAME: &'static CStr;

    /// Writes the file's contents into `page` (a zeroed `PAGE_SIZE` buffer) and returns the
    /// number of bytes written.
    fn show(data: &T, page: &mut [u8]) -> usize;
}

struct AttrVTable<T, A>(PhantomData<(T, A)>);

impl<T: Send + Sync + 'static, A: Attribute<T>> AttrVTable<T, A> {
    // `as_char_ptr` is not `const`; a C string pointer cast is exactly what it does. With
    // lockdep `struct attribute` has more fields, hence the struct update.
    #[allow(clippy::disallowed_methods, clippy::needless_update)]
    const ATTR: bindings::device_attribute = bindings::device_attribute {
        attr: bindings::attribute {
            name: A::NAME.as_ptr().cast(),
            mode: 0o444,
            ..pin_init::zeroed()
        },
        __bindgen_anon_1: bindings::device_attribute__bindgen_ty_1 {
            show: Some(Self::show),
        },
        ..pin_init::zeroed()
    };

    const ATTRS: [*mut bindings::attribute; 2] = [
        core::ptr::from_ref(&Self::ATTR.attr).cast_mut(),
        core::ptr::null_mut(),
    ];

    const GROUP: bindings::attribute_group = bindings::attribute_group {
        __bindgen_anon_2: bindings::attribute_group__bindgen_ty_2 {
            attrs: core::ptr::from_ref(&Self::ATTRS).cast_mut().cast(),
        },
        ..pin_init::zeroed()
    };

    extern "C" fn show(
        dev: *mut bindings::device,
        _attr: *mut bindings::device_attribute,
        buf: *mut c_char,
    ) -> isize {
        // SAFETY: The attribute only exists on `ClassDevice<T>` devices, whose driver data is
        // an `Arc<T>` that outlives every `show` call (see the module docs).
        let data = unsafe { <Arc<T> as ForeignOwnable>::borrow(bindings::dev_get_drvdata(dev)) };
        // SAFETY: sysfs passes a zeroed buffer of `PAGE_SIZE` bytes.
        let page =
            unsafe { core::slice::from_raw_parts_mut(buf.cast::<u8>(), bindings::PAGE_SIZE) };
        let len = page.len();
        A::show(&data, page).min(len) as isize
    }
}

/// The kind of uevent to send with [`ClassDevice::uevent`].
#[derive(Clone, Copy)]
pub enum Uevent {
    /// `KOBJ_CHANGE`.
    Change,
}

/// A device in a [`Class`], unregistered on drop.
///
/// # Invariants
///
/// `dev` was returned by `device_create()` in `class` with driver data
/// `Arc::<T>::into_foreign()` and is registered until `drop`.
pub struct ClassDevice<T: Send + Sync + 'static> {
    dev: NonNull<bindings::device>,
    /// The device's class, kept until the device is unregistered (dropped after `drop` runs).
    _class: Arc<Class>,
    _p: PhantomData<Arc<T>>,
}

// SAFETY: The device functions may be called from any thread; `T` is `Send + Sync`.
unsafe impl<T: Send + Sync + 'static> Send for ClassDevice<T> {}
// SAFETY: As above.
unsafe impl<T: Send + Sync + 'static> Sync for ClassDevice<T> {}

impl<T: Send + Sync + 'static> ClassDevice<T> {
    /// Creates device `name` with number `devt` in `class`, under `parent`. The device keeps
    /// `class` alive.
    pub fn new(
        class: &Arc<Class>,
        parent: &device::Device,
        devt: DevT,
        data: Arc<T>,
        name: &CStr,
    ) -> Result<Self> {
        let name = CString::try_from(name)?;
        let drvdata = data.into_foreign();
        // SAFETY: All pointers are valid; `device_create` copies `name`.
        let ret = unsafe {
            bindings::device_create_named(
                class.ptr.as_ptr(),
                parent.as_raw(),
                devt.as_raw(),
                drvdata,
                name.as_char_ptr(),
            )
        };
        match from_err_ptr(ret).map(NonNull::new) {
            Ok(Some(dev)) => Ok(Self {
                dev,
                _class: class.clone(),
                _p: PhantomData,
            }),
            other => {
                // SAFETY: The device was not created, so we still own the reference.
                drop(unsafe { Arc::<T>::from_foreign(drvdata) });
                Err(other.err().unwrap_or(ENOMEM))
            }
        }
    }

    /// The kernel name of the device.
    pub fn name(&self) -> &CStr {
        // SAFETY: A registered device always has a name, valid while it is registered.
        unsafe { CStr::from_char_ptr(bindings::dev_name(self.dev.as_ptr())) }
    }

    /// The generic device.
    pub fn as_device(&self) -> &device::Device {
        // SAFETY: By the type invariant `dev` is live while `self` is.
        unsafe { device::Device::from_raw(self.dev.as_ptr()) }
    }

    /// Creates attribute `A` as a sysfs file of the device.
    pub fn add_attribute<A: Attribute<T>>(&self) -> Result {
        // SAFETY: By the type invariant the device is registered; the group is a static
        // constant.
        to_result(unsafe {
            bindings::sysfs_create_group(
                &raw mut (*self.dev.as_ptr()).kobj,
                &AttrVTable::<T, A>::GROUP,
            )
        })
    }

    /// Removes attribute `A` (harmless if it was never added).
    pub fn remove_attribute<A: Attribute<T>>(&self) {
        // SAFETY: By the type invariant the device is registered.
        unsafe {
            bindings::sysfs_remove_group(
                &raw mut (*self.dev.as_ptr()).kobj,
                &AttrVTable::<T, A>::GROUP,
            )
        };
    }

    /// Sends a uevent for the device.
    pub fn uevent(&self, kind: Uevent) -> Result {
        let action = match kind {
            Uevent::Change => bindings::kobject_action_KOBJ_CHANGE,
        };
        // SAFETY: By the type invariant the device is registered.
        to_result(unsafe { bindings::kobject_uevent(&raw mut (*self.dev.as_ptr()).kobj, action) })
    }
}

impl<T: Send + Sync + 'static> Drop for ClassDevice<T> {
    fn drop(&mut self) {
        // SAFETY: By the type invariant the device is registered.
        let drvdata = unsafe { bindings::dev_get_drvdata(self.dev.as_ptr()) };
        // SAFETY: By the type invariant; this waits for running sysfs callbacks.
        unsafe { bindings::device_unregister(self.dev.as_ptr()) };
        // SAFETY: No callback can use the driver data any more.
        drop(unsafe { Arc::<T>::from_foreign(drvdata) });
    }
}
