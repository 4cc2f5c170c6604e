# celltx::hdf5: the HDF5 C library (io/hdf5.hpp, io/h5ad.hpp), found without enabling the C
# language (FindHDF5's C component try-compiles a .c file, which a C++-only project cannot).
# Sets CELLTX_HDF5_FOUND; Debian/Ubuntu put the serial build under include/hdf5/serial.
if(NOT TARGET celltx::hdf5)
  find_path(CELLTX_HDF5_INCLUDE_DIR hdf5.h PATH_SUFFIXES hdf5/serial hdf5)
  find_library(CELLTX_HDF5_LIBRARY NAMES hdf5_serial hdf5 PATH_SUFFIXES hdf5/serial)
  if(CELLTX_HDF5_INCLUDE_DIR AND CELLTX_HDF5_LIBRARY)
    add_library(celltx::hdf5 INTERFACE IMPORTED)
    set_target_properties(celltx::hdf5 PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${CELLTX_HDF5_INCLUDE_DIR}"
      INTERFACE_LINK_LIBRARIES "${CELLTX_HDF5_LIBRARY}")
  endif()
endif()
if(TARGET celltx::hdf5)
  set(CELLTX_HDF5_FOUND TRUE)
else()
  set(CELLTX_HDF5_FOUND FALSE)
endif()
